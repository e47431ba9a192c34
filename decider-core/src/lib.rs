//! # decider-core
//!
//! The Decider pattern for event-sourced Rust, and the runtime around it.
//!
//! - [`Decider`]: pure `decide(command, state) -> events` and `evolve(state, event) -> state`,
//!   the only place business rules live; [`combinators`] compose deciders; [`View`] and [`Saga`]
//!   are the read side and the reactions.
//! - [`EventStore`]: the contract every store implements — optimistic-concurrency appends,
//!   stream and global reads, catch-up-then-live subscriptions.
//! - [`CommandHandler`]: load, fold, decide, append with the exact expected version, retry on
//!   conflict, answer repeated commands from their idempotency key; optionally with a
//!   [state cache](StateCache) (one round trip per command on a warm stream) and
//!   [snapshots](SnapshotStore) for long streams.
//! - [`JsonCodec`]: events as JSON, the enum variant name as event type, upcasters for old
//!   payloads.
//! - `testing` (feature `testing`): the given/when/then DSLs.
//!
//! ```
//! use decider_core::{CommandHandler, Decider, StreamId};
//! use decider_store_memory::MemoryStore;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum Event { Opened { owner: String }, Deposited { amount: u64 } }
//! enum Command { Open { owner: String }, Deposit { amount: u64 } }
//! #[derive(Debug, PartialEq, thiserror::Error)]
//! enum Error {
//!     #[error("already open")] AlreadyOpen,
//!     #[error("not open")] NotOpen,
//!     #[error("amounts must be positive")] ZeroAmount,
//! }
//!
//! struct Account;
//! impl Decider for Account {
//!     type Command = Command;
//!     type Event = Event;
//!     type State = Option<u64>; // None until opened, then the balance
//!     type Error = Error;
//!     fn initial_state(&self) -> Option<u64> { None }
//!     fn decide(&self, command: &Command, state: &Option<u64>) -> Result<Vec<Event>, Error> {
//!         match (command, state) {
//!             (Command::Open { owner }, None) => Ok(vec![Event::Opened { owner: owner.clone() }]),
//!             (Command::Open { .. }, Some(_)) => Err(Error::AlreadyOpen),
//!             (Command::Deposit { amount: 0 }, _) => Err(Error::ZeroAmount),
//!             (Command::Deposit { amount }, Some(_)) => Ok(vec![Event::Deposited { amount: *amount }]),
//!             (Command::Deposit { .. }, None) => Err(Error::NotOpen),
//!         }
//!     }
//!     fn evolve(&self, state: Option<u64>, event: &Event) -> Option<u64> {
//!         match event {
//!             Event::Opened { .. } => Some(0),
//!             Event::Deposited { amount } => state.map(|balance| balance + amount),
//!         }
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let accounts = CommandHandler::new(Account, MemoryStore::new());
//! let ada = StreamId::new("account-ada")?;
//! accounts.handle(&ada, Command::Open { owner: "ada".into() }).await?;
//! accounts.handle(&ada, Command::Deposit { amount: 100 }).await?;
//! assert_eq!(accounts.load(&ada).await?.state, Some(100));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Where things are
//!
//! Everything a user of the crate names every day is at the root, under one path each; the
//! modules that hold it are private, named for what they hold (`stream.rs` holds [`StreamId`],
//! `position.rs` holds [`Position`], …) so that a reader of the source can guess the file. Three
//! families of items that belong together and are named less often have public modules of their
//! own, and are reachable only there.
//!
//! | at the root | what it is | source file |
//! |---|---|---|
//! | [`Decider`], [`fold`], [`fold_from`] | the pure model | `decider.rs` |
//! | [`View`], [`fold_view`], [`Recorded`] | read-side folds, and events decoded with their place | `view.rs` |
//! | [`Saga`], [`Process`], [`ProcessStep`], [`Refused`] | pure reactions, event to commands; processes, sagas with state | `saga.rs` |
//! | [`StreamId`], [`InvalidStreamId`], [`MAX_STREAM_ID_BYTES`], [`Category`], [`StreamKey`], [`MAX_CATEGORY_BYTES`], [`MAX_STREAM_KEY_BYTES`], [`ExpectedVersion`] | naming streams, and what an append expects of one | `stream.rs` |
//! | [`Position`], [`InvalidPosition`] | places in the global log | `position.rs` |
//! | [`EventData`], [`RecordedEvent`], [`ContentType`] | events on their way in and out | `event.rs` |
//! | [`Metadata`] | correlation, causation, idempotency key, trace context, headers | `metadata.rs` |
//! | [`TraceParent`], [`TraceId`], [`SpanId`], [`InvalidTraceParent`], [`TraceHook`], [`set_trace_hook`], [`continue_trace`], [`start_trace`] | the W3C trace context in metadata, and the hook a tracer (OpenTelemetry) plugs in to own the span ids | `trace.rs` |
//! | [`EventStore`], [`AppendResult`], [`StreamFrom`], [`Direction`], [`EventFilter`], [`EventStream`], [`Subscription`], [`SubscriptionMessage`], [`StoreError`], [`ErrorSource`] | the store contract | `store.rs` |
//! | [`check_append`], [`MAX_PAYLOAD_BYTES`] | for store adapters: what every store refuses before it writes | `append_check.rs` |
//! | [`measured_append`] | for store adapters: the append metrics; every metric's name (`decider_*`) and recording | `telemetry.rs` |
//! | [`StoreCatalog`], [`StreamSummary`] | listing streams, for inspection tools | `catalog.rs` |
//! | [`SubscriptionRetry`] | for store adapters: how a live subscription rides out a failed query | `subscription_retry.rs` |
//! | [`Codec`], [`JsonCodec`], [`EncodedEvent`], [`CodecError`] | domain events to bytes and back | `codec.rs` |
//! | [`CommandHandler`], [`CommandOutcome`], [`CommandError`], [`RetryPolicy`] | running commands | `handler/` (the retry loop in `handler/attempt.rs`) |
//! | [`Loaded`] | a stream's folded state and revision | `loaded.rs` |
//! | [`StateCache`] | the handler's state cache | `cache.rs` |
//! | [`Snapshot`], [`SnapshotStore`], [`SnapshotPolicy`] | snapshots of long streams | `snapshot.rs` |
//! | [`Clock`], [`SystemClock`], [`ManualClock`] | where time enters | `clock.rs` |
//! | [`IdGenerator`], [`RandomIds`], [`SequentialIds`] | where ids enter | `ids.rs` |
//!
//! | public module | what it holds |
//! |---|---|
//! | [`combinators`] | composing deciders: `combine`, `map_*`, `many`, `Either` |
//! | [`projection`] | the projection runner, sinks, checkpoints, dead letters, leases, sagas as projections |
//! | `testing` (feature `testing`) | the given/when/then DSLs, one file each under `testing/`: deciders, views, sagas, command handlers |
//!
//! No item is reachable by two public paths. A new item goes into the file named for what it
//! holds and gets one `pub use` here, unless it joins one of the three public modules; the
//! workspace's `unreachable_pub` lint points at an item that was made `pub` and not re-exported.
#![deny(missing_docs)]

mod append_check;
mod backoff;
mod cache;
mod catalog;
mod clock;
mod codec;
pub mod combinators;
pub mod dcb;
mod decider;
mod event;
mod handler;
mod ids;
mod loaded;
mod metadata;
mod position;
pub mod projection;
mod saga;
mod snapshot;
mod store;
mod stream;
mod subscription_retry;
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;
mod view;

pub use append_check::{MAX_PAYLOAD_BYTES, check_append};
pub use cache::StateCache;
pub use catalog::{StoreCatalog, StreamSummary};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{Codec, CodecError, EncodedEvent, JsonCodec};
pub use decider::{Decider, fold, fold_from};
pub use event::{ContentType, EventData, RecordedEvent};
pub use handler::{CommandError, CommandHandler, CommandOutcome, RetryPolicy};
pub use ids::{IdGenerator, RandomIds, SequentialIds};
pub use loaded::Loaded;
pub use metadata::Metadata;
pub use position::{InvalidPosition, Position};
pub use saga::{Process, ProcessStep, Refused, Saga};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
pub use store::{
    AppendResult, Direction, ErrorSource, EventFilter, EventStore, EventStream, StoreError,
    StreamFrom, Subscription, SubscriptionMessage,
};
pub use stream::{
    Category, ExpectedVersion, InvalidStreamId, MAX_CATEGORY_BYTES, MAX_STREAM_ID_BYTES,
    MAX_STREAM_KEY_BYTES, StreamId, StreamKey,
};
pub use subscription_retry::SubscriptionRetry;
pub use telemetry::measured_append;
pub use trace::{
    InvalidTraceParent, SpanId, TraceHook, TraceId, TraceParent, continue_trace, set_trace_hook,
    start_trace,
};
pub use view::{Recorded, View, fold_view};
