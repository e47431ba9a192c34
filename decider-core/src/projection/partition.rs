//! Partitions: a projection split by stream, so that several runners (in any processes) share its
//! work while each stream's events stay in order.
//!
//! An event belongs to the partition of its stream. A stream's partition among `count` comes
//! from a 32-bit hash of its id: the first four bytes (big-endian) of the MD5 digest of the id's
//! UTF-8 bytes, scaled to the count (`hash × count / 2³²`). The mapping is part of the contract:
//! it never changes for a given count, it is the same in every store, and a database can compute
//! it itself (PostgreSQL: `('x' || substr(md5(stream_id), 1, 8))::bit(32)::bigint`), so that it
//! filters by partition without handing over the other partitions' events. MD5 is used for its
//! spread and its availability everywhere, not for security.
//!
//! Because a partition is a range of the hash, doubling the count splits every partition in
//! two: partition `i` of `n` is partitions `2i` and `2i + 1` of `2n`.

use std::fmt;

use md5::{Digest, Md5};

use crate::StreamId;

/// The 32-bit partition hash of a stream id: the first four bytes (big-endian) of the MD5 digest
/// of its UTF-8 bytes. Fixed forever: partitions' checkpoints depend on it.
///
/// ```
/// use decider_core::StreamId;
/// use decider_core::projection::stream_hash;
///
/// // The same as PostgreSQL's `('x' || substr(md5('account-1'), 1, 8))::bit(32)::bigint`.
/// assert_eq!(stream_hash(&StreamId::new("account-1").unwrap()), 3_328_685_524);
/// ```
pub fn stream_hash(stream: &StreamId) -> u32 {
    let digest = Md5::digest(stream.as_str().as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Why a [`Partition`] cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PartitionError {
    /// A projection has at least one partition.
    #[error("a projection has at least one partition, not 0")]
    NoPartitions,
    /// The index is not below the count.
    #[error("partition {index} does not exist among {count}")]
    OutOfRange {
        /// The index asked for.
        index: u32,
        /// The count.
        count: u32,
    },
}

/// One of `count` partitions of a projection: the streams whose [`stream_hash`] falls in its
/// range (`hash × count / 2³²` is the partition's index). The mapping never changes for a given
/// count and is the same in every store; PostgreSQL computes the hash itself as
/// `('x' || substr(md5(stream_id), 1, 8))::bit(32)::bigint`, so that it filters by partition.
/// Partitions are ranges of the hash, so doubling the count splits each partition in two.
///
/// ```
/// use decider_core::StreamId;
/// use decider_core::projection::Partition;
///
/// let stream = StreamId::new("account-1").unwrap();
/// let partition = Partition::of(&stream, 4).unwrap();
/// assert_eq!((partition.index(), partition.count()), (3, 4));
/// assert!(partition.contains(&stream));
/// assert!(!Partition::new(0, 4).unwrap().contains(&stream));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    index: u32,
    count: u32,
}

impl Partition {
    /// Partition `index` (from 0) of `count`.
    pub fn new(index: u32, count: u32) -> Result<Self, PartitionError> {
        if count == 0 {
            return Err(PartitionError::NoPartitions);
        }
        if index >= count {
            return Err(PartitionError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// Every partition of `count`, in order.
    pub fn all(count: u32) -> Result<Vec<Self>, PartitionError> {
        if count == 0 {
            return Err(PartitionError::NoPartitions);
        }
        Ok((0..count).map(|index| Self { index, count }).collect())
    }

    /// The partition of `stream` among `count`.
    pub fn of(stream: &StreamId, count: u32) -> Result<Self, PartitionError> {
        if count == 0 {
            return Err(PartitionError::NoPartitions);
        }
        Ok(Self {
            index: index_of(stream_hash(stream), count),
            count,
        })
    }

    /// Its index, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many partitions there are.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether `stream`'s events belong to it.
    pub fn contains(&self, stream: &StreamId) -> bool {
        self.contains_hash(stream_hash(stream))
    }

    /// Whether a stream of hash `hash` belongs to it.
    pub fn contains_hash(&self, hash: u32) -> bool {
        index_of(hash, self.count) == self.index
    }
}

/// `hash × count / 2³²`: the high bits pick the partition, so that partitions are ranges.
fn index_of(hash: u32, count: u32) -> u32 {
    ((u64::from(hash) * u64::from(count)) >> 32) as u32
}

/// `2/4` is partition 2 of 4.
impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stream(id: &str) -> StreamId {
        StreamId::new(id).unwrap()
    }

    #[test]
    fn the_hash_is_md5s_first_four_bytes() {
        // md5("account-1") begins c667b5d4; fixed forever: checkpoints depend on it.
        assert_eq!(stream_hash(&stream("account-1")), 0xc667_b5d4);
        assert_eq!(Partition::of(&stream("account-1"), 4).unwrap().index(), 3);
    }

    #[test]
    fn bad_counts_and_indexes_are_refused() {
        assert_eq!(Partition::new(0, 0), Err(PartitionError::NoPartitions));
        assert_eq!(
            Partition::new(4, 4),
            Err(PartitionError::OutOfRange { index: 4, count: 4 })
        );
        assert_eq!(Partition::all(0), Err(PartitionError::NoPartitions));
        assert_eq!(
            Partition::of(&stream("a"), 0),
            Err(PartitionError::NoPartitions)
        );
        assert_eq!(Partition::new(2, 4).unwrap().to_string(), "2/4");
    }

    #[test]
    fn streams_spread_over_the_partitions() {
        let mut counts = [0u32; 4];
        for n in 0..4_000 {
            let id = stream(&format!("account-{}", uuid::Uuid::from_u128(n)));
            counts[Partition::of(&id, 4).unwrap().index() as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn every_stream_is_in_exactly_one_partition(id in "[a-z]{1,8}-[0-9a-f]{1,32}", count in 1u32..64) {
            let stream = stream(&id);
            let holders: Vec<_> = Partition::all(count).unwrap().into_iter().filter(|p| p.contains(&stream)).collect();
            prop_assert_eq!(holders, vec![Partition::of(&stream, count).unwrap()]);
        }

        #[test]
        fn doubling_the_count_splits_each_partition_in_two(id in "[a-z]{1,8}-[0-9a-f]{1,32}", count in 1u32..64) {
            let stream = stream(&id);
            let half = Partition::of(&stream, count).unwrap().index();
            let double = Partition::of(&stream, count * 2).unwrap().index();
            prop_assert_eq!(double / 2, half);
        }
    }
}
