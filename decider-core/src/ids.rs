//! Where ids enter: [`IdGenerator`] (documented there), [`RandomIds`], [`SequentialIds`], and
//! the deterministic ids of keyed commands.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

use crate::stream::StreamId;

/// Draws ids for events and correlations that carry no idempotency key.
///
/// Where identity enters the system: an [`IdGenerator`], injected so that nothing else draws
/// random ids and tests can fix them, and the deterministic ids of keyed commands.
///
/// Deciders never see it: which id a new order gets arrives inside the command, drawn at the
/// edge.
///
/// ```
/// use decider_core::{IdGenerator, SequentialIds};
/// use uuid::Uuid;
///
/// let ids = SequentialIds::default();
/// assert_eq!(ids.new_id(), Uuid::from_u128(1));
/// assert_eq!(ids.new_id(), Uuid::from_u128(2));
/// ```
pub trait IdGenerator: Send + Sync + 'static {
    /// A new, unique id.
    fn new_id(&self) -> Uuid;
}

/// Random (v4) ids from the operating system's secure generator.
///
/// The randomness is drawn 4 KiB at a time into a per-thread pool: one system call per 256 ids
/// instead of one per id, which was a tenth of the cost of a command on the memory store.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

struct RandomPool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static POOL: RefCell<RandomPool> = const {
        RefCell::new(RandomPool { bytes: [0; 4096], used: 4096 })
    };
}

impl IdGenerator for RandomIds {
    fn new_id(&self) -> Uuid {
        POOL.with_borrow_mut(|pool| {
            if pool.used + 16 > pool.bytes.len() {
                if getrandom::fill(&mut pool.bytes).is_err() {
                    // Only on a system without a random source; uuid's own path reports it.
                    return Uuid::new_v4();
                }
                pool.used = 0;
            }
            let mut random = [0; 16];
            random.copy_from_slice(&pool.bytes[pool.used..pool.used + 16]);
            pool.used += 16;
            uuid::Builder::from_random_bytes(random).into_uuid()
        })
    }
}

/// Ids 1, 2, 3, … as UUIDs: for deterministic tests.
#[derive(Debug, Default)]
pub struct SequentialIds(AtomicU64);

impl IdGenerator for SequentialIds {
    fn new_id(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.0.fetch_add(1, Ordering::Relaxed) + 1))
    }
}

/// Namespace of the v5 event ids derived from idempotency keys.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x9d72_bfd6_ee76_5e95_a0ff_ca68_e35f_2087);

/// The id of the `index`-th event of the command with idempotency key `key` on `stream`: what
/// the [`CommandHandler`](crate::CommandHandler) gives a keyed command's events, so that a
/// repeat of the command writes the same ids.
///
/// Stream ids hold no control characters and the index no newline, so the name is unambiguous.
pub(crate) fn idempotent_event_id(stream: &StreamId, key: &str, index: usize) -> Uuid {
    Uuid::new_v5(
        &IDEMPOTENCY_NAMESPACE,
        format!("{stream}\n{index}\n{key}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn random_ids_are_v4_and_distinct_across_pool_refills() {
        let ids: HashSet<Uuid> = (0..10_000).map(|_| RandomIds.new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.get_version_num() == 4));
    }

    #[test]
    fn idempotent_ids_differ_by_stream_key_and_index() {
        let a = StreamId::new("a").unwrap();
        let b = StreamId::new("b").unwrap();
        let id = idempotent_event_id(&a, "k", 0);
        assert_eq!(id, idempotent_event_id(&a, "k", 0));
        assert_ne!(id, idempotent_event_id(&b, "k", 0));
        assert_ne!(id, idempotent_event_id(&a, "k2", 0));
        assert_ne!(id, idempotent_event_id(&a, "k", 1));
    }
}
