//! The conformance checks, one `pub async fn` per contract point, grouped by topic.
//!
//! Every check has the shape `pub async fn name<S: EventStore + Clone>(store: S)` and panics,
//! with a message naming the broken rule, when the store breaks the contract. Each one writes
//! only to streams of its own (fresh categories and ids) and reads the global log through
//! filters on them, so it passes on a shared store too.
//! [`conformance_tests!`](crate::conformance_tests) runs them all; a store's tests may also call
//! one directly:
//!
//! ```
//! use decider_store_memory::MemoryStore;
//! use decider_tests::conformance::append;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! append::append_with_exact_version_refuses_a_stale_revision(MemoryStore::new()).await;
//! # });
//! ```

pub mod append;
pub mod bad_input;
pub mod concurrency;
pub mod dcb;
pub mod partition;
pub mod read;
pub mod subscribe;

mod support;
