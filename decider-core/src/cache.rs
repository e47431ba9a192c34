//! [`StateCache`], the command handler's bounded cache of folded states (documented there).

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use crate::loaded::Loaded;
use crate::stream::StreamId;

/// Caches of at least this many entries are split into [`SHARDS`] shards; smaller ones have one,
/// so that a small bound is exact and every entry competes with every other for its place.
const SHARDING_THRESHOLD: usize = 1024;
const SHARDS: usize = 16;

/// The state cache of a [`CommandHandler`](crate::CommandHandler): a bounded map from stream to
/// its folded state and last revision, shared by the handler's tasks, so that a command on a
/// warm stream skips the read.
///
/// A cached state is only ever a *guess* of the stream's current state: the handler decides on
/// it and appends with `Exact(last_revision)`, so the store refuses the append if anything was
/// written since; the handler then drops the entry, reads what it missed and decides again. A
/// stale entry therefore costs a retry, never a wrong decision.
///
/// The cache is bounded by its number of entries and evicts with the CLOCK algorithm (an LRU
/// approximation: an entry used since the hand last passed gets a second chance). It is split
/// into shards, each behind its own `std::sync::Mutex` held for a map lookup and never across an
/// `.await`, so tasks on different streams rarely wait for each other.
///
/// ```
/// # use decider_core::{CommandHandler, Decider, StreamId};
/// # use decider_store_memory::MemoryStore;
/// # use serde::{Deserialize, Serialize};
/// # struct Counter;
/// # #[derive(Serialize, Deserialize)] enum Event { Added { n: u64 } }
/// # impl Decider for Counter {
/// #     type Command = u64; type Event = Event; type State = u64; type Error = std::convert::Infallible;
/// #     fn initial_state(&self) -> u64 { 0 }
/// #     fn decide(&self, n: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> { Ok(vec![Event::Added { n: *n }]) }
/// #     fn evolve(&self, s: u64, Event::Added { n }: &Event) -> u64 { s + n }
/// # }
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let counters = CommandHandler::new(Counter, MemoryStore::new()).with_cache(10_000);
/// let stream = StreamId::new("counter-1")?;
/// counters.handle(&stream, 5).await?; // reads the (empty) stream, appends, caches the state
/// counters.handle(&stream, 2).await?; // decides on the cached state: one append, no read
///
/// let cached = counters.cache().and_then(|cache| cache.get(&stream)).unwrap();
/// assert_eq!((cached.state, cached.last_revision), (7, Some(1)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct StateCache<S> {
    shards: Box<[Mutex<Shard<S>>]>,
    hasher: RandomState,
    /// `S::clone`, captured where `S: Clone` is known, so that the handler's methods need not
    /// require it of every state.
    clone: fn(&S) -> S,
    max_entries: usize,
}

struct Shard<S> {
    /// Index into `slots` of each stream's entry.
    index: HashMap<StreamId, usize>,
    slots: Vec<Slot<S>>,
    /// The CLOCK hand: the next slot considered for eviction.
    hand: usize,
    max_entries: usize,
}

struct Slot<S> {
    stream: StreamId,
    last_revision: Option<u64>,
    state: S,
    /// Used since the hand last passed: spared once.
    referenced: bool,
}

impl<S> fmt::Debug for StateCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCache")
            .field("state", &std::any::type_name::<S>())
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl<S: Clone> StateCache<S> {
    /// An empty cache holding at most `max_entries` streams.
    pub fn new(max_entries: usize) -> Self {
        let shards = if max_entries >= SHARDING_THRESHOLD {
            SHARDS
        } else {
            1
        };
        // Rounded down, so that the shards together never exceed the bound.
        let per_shard = max_entries / shards;
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        index: HashMap::new(),
                        slots: Vec::new(),
                        hand: 0,
                        max_entries: per_shard,
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            clone: S::clone,
            max_entries: per_shard * shards,
        }
    }
}

impl<S> StateCache<S> {
    /// The most streams the cache holds.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The number of streams cached now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).slots.len()).sum()
    }

    /// Whether no stream is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the cached state of `stream` and the revision it was folded up to, if cached.
    /// It may be stale: another process may have written to the stream since.
    pub fn get(&self, stream: &StreamId) -> Option<Loaded<S>> {
        let mut shard = self.shard(stream);
        let at = *shard.index.get(stream)?;
        let slot = &mut shard.slots[at];
        slot.referenced = true;
        Some(Loaded {
            state: (self.clone)(&slot.state),
            last_revision: slot.last_revision,
        })
    }

    /// Drops the entry of `stream`, if any.
    pub fn remove(&self, stream: &StreamId) {
        self.shard(stream).remove(stream);
    }

    /// Drops every entry.
    pub fn clear(&self) {
        for shard in &*self.shards {
            let mut shard = lock(shard);
            shard.index.clear();
            shard.slots.clear();
            shard.hand = 0;
        }
    }

    /// Caches `state` as the fold of `stream` up to `last_revision`, unless the entry already
    /// holds that revision or a later one: with many tasks finishing in any order, the cache
    /// must never go back to an older state. Returns whether the entry was written.
    ///
    /// Not public: a state that is not the fold of the stream up to `last_revision` would be
    /// decided on and appended with a matching expectation, so only the handler writes here.
    pub(crate) fn insert(&self, stream: &StreamId, last_revision: Option<u64>, state: S) -> bool {
        let mut shard = self.shard(stream);
        if let Some(&at) = shard.index.get(stream) {
            let slot = &mut shard.slots[at];
            // `None` (no stream) orders before every revision.
            if slot.last_revision >= last_revision {
                return false;
            }
            slot.last_revision = last_revision;
            slot.state = state;
            slot.referenced = true;
            return true;
        }
        let slot = Slot {
            stream: stream.clone(),
            last_revision,
            state,
            referenced: false,
        };
        shard.add(slot)
    }

    /// Drops the entry of `stream` if it is not newer than `stale` (the revision a refused
    /// append expected): an entry another task has brought up to date since is kept.
    pub(crate) fn remove_stale(&self, stream: &StreamId, stale: Option<u64>) {
        let mut shard = self.shard(stream);
        let is_stale = shard
            .index
            .get(stream)
            .is_some_and(|&at| shard.slots[at].last_revision <= stale);
        if is_stale {
            shard.remove(stream);
        }
    }

    fn shard(&self, stream: &StreamId) -> MutexGuard<'_, Shard<S>> {
        // Truncating the hash is fine: any bits pick a shard evenly.
        let at = self.hasher.hash_one(stream) as usize % self.shards.len();
        lock(&self.shards[at])
    }
}

fn lock<S>(shard: &Mutex<Shard<S>>) -> MutexGuard<'_, Shard<S>> {
    // Nothing panics while a shard is locked except an allocation failure, and a shard is
    // consistent between statements; a poisoned lock still guards a usable map.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S> Shard<S> {
    /// Adds an entry for a stream not in the shard, evicting one if full.
    fn add(&mut self, slot: Slot<S>) -> bool {
        if self.max_entries == 0 {
            return false;
        }
        if self.slots.len() < self.max_entries {
            self.index.insert(slot.stream.clone(), self.slots.len());
            self.slots.push(slot);
            return true;
        }
        // CLOCK: spare (and unmark) referenced entries until an unreferenced one comes up; at
        // most one full turn, since the turn unmarks every entry it passes.
        while self.slots[self.hand].referenced {
            self.slots[self.hand].referenced = false;
            self.hand = (self.hand + 1) % self.slots.len();
        }
        let victim = self.hand;
        self.index.remove(&self.slots[victim].stream);
        self.index.insert(slot.stream.clone(), victim);
        self.slots[victim] = slot;
        self.hand = (victim + 1) % self.slots.len();
        true
    }

    fn remove(&mut self, stream: &StreamId) {
        let Some(at) = self.index.remove(stream) else {
            return;
        };
        self.slots.swap_remove(at);
        if let Some(moved) = self.slots.get(at) {
            self.index.insert(moved.stream.clone(), at);
        }
        if self.hand >= self.slots.len() {
            self.hand = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn stream(n: usize) -> StreamId {
        StreamId::new(format!("s-{n}")).unwrap()
    }

    #[test]
    fn an_insert_never_replaces_a_state_with_an_older_one() {
        let cache = StateCache::new(10);
        let s = stream(1);
        assert!(cache.insert(&s, Some(5), "five"));
        assert!(!cache.insert(&s, Some(4), "four"));
        assert!(!cache.insert(&s, Some(5), "five again"));
        assert!(!cache.insert(&s, None, "empty"));
        assert_eq!(cache.get(&s).unwrap().state, "five");
        assert!(cache.insert(&s, Some(6), "six"));
        assert_eq!(cache.get(&s).unwrap().last_revision, Some(6));
    }

    #[test]
    fn concurrent_inserts_leave_the_newest_state() {
        let cache = Arc::new(StateCache::new(10));
        let s = stream(1);
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (cache, s) = (cache.clone(), s.clone());
                std::thread::spawn(move || {
                    // Each thread inserts its revisions in a different order.
                    for i in 0..1_000u64 {
                        let revision = (i * 7 + t * 251) % 1_000;
                        cache.insert(&s, Some(revision), revision);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let cached = cache.get(&s).unwrap();
        assert_eq!((cached.last_revision, cached.state), (Some(999), 999));
    }

    #[test]
    fn the_bound_holds_and_recently_used_entries_survive_eviction() {
        let cache = StateCache::new(3);
        for n in 0..3 {
            cache.insert(&stream(n), Some(0), n);
        }
        // Stream 0 was used since: the first eviction passes it over.
        cache.get(&stream(0)).unwrap();
        cache.insert(&stream(3), Some(0), 3);
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&stream(0)).is_some());
        assert!(cache.get(&stream(1)).is_none());
        for n in 4..100 {
            cache.insert(&stream(n), Some(0), n);
            assert!(cache.len() <= 3);
        }
        let sharded = StateCache::new(5_000);
        for n in 0..20_000 {
            sharded.insert(&stream(n), Some(0), n);
        }
        assert!(
            sharded.len() <= 5_000 && sharded.len() > 4_000,
            "{sharded:?}"
        );
        assert!(!StateCache::new(0).insert(&stream(0), Some(0), 0));
    }

    #[test]
    fn removal_keeps_the_index_consistent() {
        let cache = StateCache::new(4);
        for n in 0..4 {
            cache.insert(&stream(n), Some(n as u64), n);
        }
        cache.remove(&stream(0));
        cache.remove(&stream(9));
        assert_eq!(cache.len(), 3);
        for n in 1..4 {
            assert_eq!(cache.get(&stream(n)).unwrap().state, n);
        }
        // Only an entry no newer than the refused expectation goes.
        cache.remove_stale(&stream(3), Some(2));
        assert!(cache.get(&stream(3)).is_some());
        cache.remove_stale(&stream(3), Some(3));
        assert!(cache.get(&stream(3)).is_none());
        cache.clear();
        assert!(cache.is_empty());
    }
}
