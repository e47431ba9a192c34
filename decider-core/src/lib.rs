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
//!   [state cache](cache) (one round trip per command on a warm stream) and
//!   [snapshots](snapshot) ([`SnapshotStore`]) for long streams.
//! - [`JsonCodec`]: events as JSON, the enum variant name as event type, upcasters for old
//!   payloads.
//! - `testing` (feature `testing`): the given/when/then DSL.
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
#![deny(missing_docs)]

mod backoff;
pub mod cache;
pub mod clock;
pub mod codec;
pub mod combinators;
pub mod decider;
pub mod event;
pub mod handler;
pub mod metadata;
pub mod projection;
pub mod saga;
pub mod snapshot;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod view;

pub use cache::StateCache;
pub use clock::{Clock, IdGenerator, ManualClock, RandomIds, SequentialIds, SystemClock};
pub use codec::{Codec, CodecError, EncodedEvent, JsonCodec};
pub use decider::{Decider, fold, fold_from};
pub use event::{
    ContentType, EventData, ExpectedVersion, InvalidStreamId, MAX_STREAM_ID_BYTES, Position,
    RecordedEvent, StreamId,
};
pub use handler::{CommandHandler, CommandOutcome, HandlerError, Loaded, RetryPolicy};
pub use metadata::Metadata;
pub use saga::{Process, ProcessStep, Refused, Saga};
pub use snapshot::{Snapshot, SnapshotPolicy, SnapshotStore};
pub use store::{
    AppendResult, Direction, EventFilter, EventStore, EventStream, StoreError, StreamFrom,
    Subscription, SubscriptionMessage,
};
pub use view::{Recorded, View};
