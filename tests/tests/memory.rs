//! The conformance kit run against the in-memory store.

use decider_store_memory::MemoryStore;

async fn fresh_store() -> MemoryStore {
    MemoryStore::new()
}

decider_tests::conformance_tests!(fresh_store);
