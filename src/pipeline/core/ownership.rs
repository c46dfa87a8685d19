//! Which accounts (and journey loops) this instance owns in the distributed mode.
//!
//! Kafka assigns each instance some partitions of the co-partitioned topics; an account's events
//! arrive on the partition its key hashes to, so that instance owns the account: it alone fires the
//! account's loop deadlines and detector timers and judges its metric windows. A journey loop
//! belongs to the partition its key hashes to. The hash is the Java client's (murmur2, which
//! sigloop's producers use too), so ownership is the same whoever produced the events.

use std::collections::BTreeSet;

/// The partitions this instance holds, out of `count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub partitions: BTreeSet<i32>,
    pub count: i32,
}

impl Ownership {
    pub fn owns(&self, key: &str) -> bool {
        self.partitions
            .contains(&partition_for(key.as_bytes(), self.count))
    }
}

/// The partition Kafka's default partitioner (Java's, and librdkafka's `murmur2_random` for keyed
/// messages) gives `key` among `count` partitions.
pub fn partition_for(key: &[u8], count: i32) -> i32 {
    if count <= 0 {
        return 0;
    }
    ((murmur2(key) & 0x7fff_ffff) % count as u32) as i32
}

/// Kafka's 32-bit murmur2 (seed 0x9747b28c), as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_values_of_kafkas_own_test_suite() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2, as signed 32-bit values.
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn an_instance_owns_the_keys_that_hash_to_its_partitions_only() {
        let all = Ownership {
            partitions: (0..4).collect(),
            count: 4,
        };
        let half = Ownership {
            partitions: [0, 1].into_iter().collect(),
            count: 4,
        };
        let other = Ownership {
            partitions: [2, 3].into_iter().collect(),
            count: 4,
        };
        for index in 0..100 {
            let key = format!("acct-{index}");
            assert!(all.owns(&key));
            assert_ne!(half.owns(&key), other.owns(&key), "{key}");
        }
    }
}
