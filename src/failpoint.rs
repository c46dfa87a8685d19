//! Crash points for the durability tests, compiled only with the `failpoints` feature (test builds).
//!
//! `SIGLOOP_FAILPOINT=name` kills the process with SIGKILL the first time `hit("name")` runs;
//! `name@N` kills it on the N-th hit. Names in use: `after_append` (log committed, 2xx not yet sent),
//! `mid_commit` (inside a processor batch's transaction), `after_commit` (batch committed, waiters not
//! yet answered), `mid_batch` (distributed mode: a batch processed in memory, its commit not yet
//! started).

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let value = std::env::var("SIGLOOP_FAILPOINT").ok()?;
        match value.split_once('@') {
            Some((name, count)) => Some((name.to_owned(), count.parse().unwrap_or(1))),
            None => Some((value, 1)),
        }
    });
    if let Some((target_name, count)) = target {
        if target_name == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *count {
            // SAFETY: raising a signal on our own process has no memory-safety preconditions.
            unsafe {
                libc::raise(libc::SIGKILL);
            }
        }
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}
