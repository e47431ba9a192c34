//! What the handler tests share: an account decider, a tally whose events carry the total they
//! were decided on, and a memory store that races and counts on demand.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use decider_core::{
    AppendResult, Decider, Direction, EventData, EventFilter, EventStore, EventStream,
    ExpectedVersion, Position, RecordedEvent, StoreError, StreamFrom, StreamId, Subscription,
};
use decider_store_memory::MemoryStore;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    Opened,
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
    Closed,
}

#[derive(Debug, Clone)]
pub enum Command {
    Open,
    Deposit(u64),
    Withdraw(u64),
    Close,
    /// Opens and deposits in one command: two events.
    OpenWith(u64),
    /// Two deposits of the amount in one command: two events.
    DepositTwice(u64),
    /// Accepted, changes nothing.
    Touch,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    NotOpen,
    AlreadyOpen,
    InsufficientFunds { balance: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum State {
    #[default]
    New,
    Open(u64),
    Closed,
}

pub struct Account;

impl Decider for Account {
    type Command = Command;
    type Event = Event;
    type State = State;
    type Error = Error;

    fn initial_state(&self) -> State {
        State::New
    }

    fn decide(&self, command: &Command, state: &State) -> Result<Vec<Event>, Error> {
        match (command, *state) {
            (Command::Open, State::New) => Ok(vec![Event::Opened]),
            (Command::OpenWith(amount), State::New) => {
                Ok(vec![Event::Opened, Event::Deposited { amount: *amount }])
            }
            (Command::Open | Command::OpenWith(_), _) => Err(Error::AlreadyOpen),
            (_, State::New | State::Closed) => Err(Error::NotOpen),
            (Command::Deposit(amount), State::Open(_)) => {
                Ok(vec![Event::Deposited { amount: *amount }])
            }
            (Command::DepositTwice(amount), State::Open(_)) => Ok(vec![
                Event::Deposited { amount: *amount },
                Event::Deposited { amount: *amount },
            ]),
            (Command::Withdraw(amount), State::Open(balance)) if *amount > balance => {
                Err(Error::InsufficientFunds { balance })
            }
            (Command::Withdraw(amount), State::Open(_)) => {
                Ok(vec![Event::Withdrawn { amount: *amount }])
            }
            (Command::Close, State::Open(_)) => Ok(vec![Event::Closed]),
            (Command::Touch, State::Open(_)) => Ok(vec![]),
        }
    }

    fn evolve(&self, state: State, event: &Event) -> State {
        match (state, event) {
            (_, Event::Opened) => State::Open(0),
            (State::Open(b), Event::Deposited { amount }) => State::Open(b + amount),
            (State::Open(b), Event::Withdrawn { amount }) => State::Open(b.saturating_sub(*amount)),
            (_, Event::Closed) => State::Closed,
            (state, _) => state,
        }
    }

    fn is_terminal(&self, state: &State) -> bool {
        *state == State::Closed
    }
}

/// A counter whose events record the total they were decided on, and whose state trusts them:
/// an event decided on a stale state breaks the chain `total = previous total + n`, which
/// [`assert_tally_chain`] checks. A lost update cannot hide.
pub struct Tally;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TallyEvent {
    Added { n: u64, total: u64 },
}

impl Decider for Tally {
    type Command = u64;
    type Event = TallyEvent;
    type State = u64;
    type Error = std::convert::Infallible;

    fn initial_state(&self) -> u64 {
        0
    }

    fn decide(&self, n: &u64, total: &u64) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Added {
            n: *n,
            total: total + n,
        }])
    }

    fn evolve(&self, _: u64, TallyEvent::Added { total, .. }: &TallyEvent) -> u64 {
        *total
    }
}

/// Checks that every `Added` of the stream was decided on the total of all events before it,
/// and returns the final total.
pub async fn assert_tally_chain(store: &impl EventStore, stream: &StreamId) -> u64 {
    let mut running = 0;
    for event in recorded(store, stream).await {
        let added: serde_json::Value = serde_json::from_slice(&event.payload).unwrap();
        let (n, total) = (
            added["n"].as_u64().unwrap(),
            added["total"].as_u64().unwrap(),
        );
        assert_eq!(
            total,
            running + n,
            "revision {} was decided on a stale total",
            event.revision
        );
        running = total;
    }
    running
}

pub fn stream() -> StreamId {
    StreamId::new(format!("account-{}", Uuid::new_v4())).unwrap()
}

pub async fn recorded(store: &impl EventStore, stream: &StreamId) -> Vec<RecordedEvent> {
    store.read_whole_stream(stream).try_collect().await.unwrap()
}

/// A memory store that counts appends, records where each stream read starts, and through
/// which another writer slips one withdrawal of 60 in before each of the next `interleave`
/// appends: a real optimistic-concurrency race, on demand.
#[derive(Clone, Default)]
pub struct RacingStore {
    pub inner: MemoryStore,
    pub interleave: Arc<AtomicU32>,
    pub appends: Arc<AtomicU32>,
    pub reads: Arc<Mutex<Vec<StreamFrom>>>,
}

impl RacingStore {
    pub fn new(interleave: u32) -> Self {
        let store = Self::default();
        store.interleave.store(interleave, Ordering::SeqCst);
        store
    }

    /// The starting points of the stream reads since the last call.
    pub fn take_reads(&self) -> Vec<StreamFrom> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }

    /// The number of appends since the last call.
    pub fn take_appends(&self) -> u32 {
        self.appends.swap(0, Ordering::SeqCst)
    }
}

impl EventStore for RacingStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendResult, StoreError> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        if self
            .interleave
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let other = EventData::json("Withdrawn", r#"{"amount":60}"#);
            self.inner
                .append(stream, ExpectedVersion::Any, vec![other])
                .await?;
        }
        self.inner.append(stream, expected, events).await
    }
    fn read_stream(
        &self,
        s: &StreamId,
        f: StreamFrom,
        d: Direction,
        l: Option<u64>,
    ) -> impl EventStream + use<> {
        self.reads.lock().unwrap().push(f);
        self.inner.read_stream(s, f, d, l)
    }
    fn read_all(
        &self,
        a: Option<Position>,
        l: Option<u64>,
        f: &EventFilter,
    ) -> impl EventStream + use<> {
        self.inner.read_all(a, l, f)
    }
    async fn head_position(&self) -> Result<Option<Position>, StoreError> {
        self.inner.head_position().await
    }
    fn subscribe_all(&self, a: Option<Position>, f: &EventFilter) -> impl Subscription + use<> {
        self.inner.subscribe_all(a, f)
    }
    fn subscribe_stream(&self, s: &StreamId, a: Option<u64>) -> impl Subscription + use<> {
        self.inner.subscribe_stream(s, a)
    }
}
