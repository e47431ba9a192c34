//! The conformance kit run against the in-memory store.

use decider_store_memory::MemoryStore;

async fn fresh_store() -> MemoryStore {
    MemoryStore::new()
}

decider_tests::conformance_tests!(fresh_store);

#[tokio::test]
async fn the_memory_control_plane_keeps_reports_and_requests() {
    decider_tests::control::control_contract(decider_core::projection::MemoryControl::default())
        .await;
}

decider_tests::dcb_conformance_tests!(fresh_store);
