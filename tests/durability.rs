//! Durability and determinism through the real binary: restarts, SIGKILL at failpoints, replays.
//!
//! Every run here uses the event-time clock, so that loop timestamps depend on the log alone and a
//! crashed run can be compared byte for byte with an uninterrupted one.

mod common;

use std::path::Path;

use common::{export, ServerProcess, TestApp};
use serde_json::Value;

const EVENT_TIME: (&str, &str) = ("SIGLOOP__CLOCK__MODE", "event_time");

fn generated(accounts: usize, events: usize, seed: u64) -> Vec<String> {
    let options = sigloop::gen::GenOptions {
        accounts,
        events,
        seed,
        ..sigloop::gen::GenOptions::default()
    };
    sigloop::gen::generate(&options).collect()
}

/// Sends `lines` in NDJSON requests of `batch`, retrying nothing: a failed request returns Err.
async fn send(
    address: &str,
    lines: &[String],
    batch: usize,
    wait: bool,
) -> Result<(u64, u64), reqwest::Error> {
    let client = reqwest::Client::new();
    let (mut accepted, mut duplicates) = (0, 0);
    let query = if wait { "?wait=true" } else { "" };
    for chunk in lines.chunks(batch) {
        let body = chunk.join("\n");
        let response = client
            .post(format!("{address}/v1/events{query}"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let value: Value = response.json().await?;
        assert!(value["rejected"].as_array().unwrap().is_empty(), "{value}");
        accepted += value["accepted"].as_u64().unwrap();
        duplicates += value["duplicates"].as_u64().unwrap();
    }
    Ok((accepted, duplicates))
}

/// The export of an uninterrupted run over `lines`.
async fn reference_export(lines: &[String], directory: &Path) -> String {
    let db = directory.join("reference.db");
    let mut server = ServerProcess::start(&db, &[EVENT_TIME]);
    server.wait_until_healthy().await;
    send(&server.address, lines, 500, true)
        .await
        .expect("the reference run ingests");
    server.terminate();
    export(&db)
}

/// Runs a server that dies at `failpoint`, restarts it, re-sends everything (a client retrying), and
/// checks the result equals an uninterrupted run: nothing lost, nothing doubled.
async fn crash_and_recover(failpoint: &str, extra_env: &[(&str, &str)]) {
    let lines = generated(40, 600, 11);
    let directory = tempfile::tempdir().unwrap();
    let expected = reference_export(&lines, directory.path()).await;
    assert!(expected.lines().count() > 5, "the workload opens loops");

    let db = directory.path().join("crashed.db");
    let mut env = vec![EVENT_TIME, ("SIGLOOP_FAILPOINT", failpoint)];
    env.extend_from_slice(extra_env);
    let mut server = ServerProcess::start(&db, &env);
    server.wait_until_healthy().await;
    // The process dies somewhere in here; requests after the kill fail to connect.
    let _ = send(&server.address, &lines, 100, false).await;
    let status = server.wait_for_exit().await;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed by its failpoint, not by a bug"
    );
    drop(server);

    let mut restarted = ServerProcess::start(&db, &[EVENT_TIME]);
    restarted.wait_until_healthy().await;
    let (accepted, duplicates) = send(&restarted.address, &lines, 100, true)
        .await
        .expect("the restarted server ingests");
    assert_eq!(accepted + duplicates, lines.len() as u64);
    assert!(
        duplicates > 0,
        "what was acknowledged before the crash is still in the log"
    );
    restarted.terminate();
    let recovered = export(&db);
    assert_eq!(
        recovered, expected,
        "the recovered loops equal an uninterrupted run"
    );
}

#[tokio::test]
async fn a_kill_after_the_log_append_and_before_the_2xx_loses_and_doubles_nothing() {
    crash_and_recover("after_append@3", &[]).await;
}

#[tokio::test]
async fn a_kill_in_the_middle_of_a_processor_batch_loses_and_doubles_nothing() {
    crash_and_recover("mid_commit@4", &[("SIGLOOP__PROCESSOR__BATCH_SIZE", "50")]).await;
}

#[tokio::test]
async fn a_kill_after_the_commit_and_before_the_wait_answers_loses_and_doubles_nothing() {
    crash_and_recover(
        "after_commit@2",
        &[("SIGLOOP__PROCESSOR__BATCH_SIZE", "50")],
    )
    .await;
}

#[tokio::test]
async fn a_graceful_restart_on_the_same_database_keeps_every_loop_and_accepts_no_duplicate() {
    let lines = generated(30, 400, 5);
    let app = TestApp::spawn_with(&[EVENT_TIME]).await;
    send(&app.address, &lines, 200, true).await.unwrap();
    let before = app.loops("limit=500").await;
    let (directory, db_path) = app.stop().await;
    let restarted = TestApp::spawn_on(directory, db_path, &[EVENT_TIME]).await;
    let after = restarted.loops("limit=500").await;
    assert_eq!(before, after);
    let (accepted, duplicates) = send(&restarted.address, &lines, 200, true).await.unwrap();
    assert_eq!((accepted, duplicates), (0, lines.len() as u64));
    assert_eq!(
        restarted.loops("limit=500").await,
        after,
        "re-delivery changed nothing"
    );
}

#[tokio::test]
async fn the_same_file_in_batches_of_1_and_of_1000_gives_byte_identical_exports() {
    let lines = generated(25, 500, 3);
    let directory = tempfile::tempdir().unwrap();
    let mut exports = Vec::new();
    for batch in [1usize, 1000] {
        let db = directory.path().join(format!("batch-{batch}.db"));
        let batch_size = batch.to_string();
        let mut server = ServerProcess::start(
            &db,
            &[
                EVENT_TIME,
                ("SIGLOOP__PROCESSOR__BATCH_SIZE", &batch_size),
                ("SIGLOOP__STORAGE__SYNCHRONOUS", "normal"),
            ],
        );
        server.wait_until_healthy().await;
        send(&server.address, &lines, batch, false).await.unwrap();
        // One last waiting request makes sure everything before it is processed.
        send(&server.address, &lines[..1], 1, true).await.unwrap();
        server.terminate();
        exports.push(export(&db));
    }
    assert!(exports[0].lines().count() > 3, "the workload opens loops");
    assert_eq!(exports[0], exports[1]);
}

#[tokio::test]
async fn sigterm_drains_a_waiting_request_before_the_process_exits() {
    let lines = generated(20, 2000, 21);
    let directory = tempfile::tempdir().unwrap();
    let db = directory.path().join("drain.db");
    // Small batches make processing take long enough to be interrupted.
    let mut server =
        ServerProcess::start(&db, &[EVENT_TIME, ("SIGLOOP__PROCESSOR__BATCH_SIZE", "5")]);
    server.wait_until_healthy().await;
    let address = server.address.clone();
    let body = lines.join("\n");
    let request = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(format!("{address}/v1/events?wait=true"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await
            .expect("the waiting request is answered");
        let status = response.status().as_u16();
        (status, response.json::<Value>().await.unwrap())
    });
    // Once the processor has started on the request's events, ask the server to stop.
    let client = reqwest::Client::new();
    loop {
        let ready: Value = client
            .get(format!("{}/readyz", server.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["processed_offset"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGTERM);
    }
    let (status, answer) = request.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["processed"], true,
        "the processor kept running until the waiting request was answered: {answer}"
    );
    let exit = server.wait_for_exit().await;
    assert!(exit.success(), "a drained shutdown exits cleanly: {exit}");
}
