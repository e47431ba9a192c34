//! The command handler over the adapter, against the **protocol double**: the server does not
//! refuse a repeat of event ids appended at the stream's current revision, so a keyed command
//! decided on a cached state must not rely on the append to catch its repeat.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use decider_core::{CommandHandler, Decider, EventStore, Metadata, StreamId};
use decider_eventstoredb_double::ProtocolDouble;
use decider_store_eventstoredb::EventStoreDbStore;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Event {
    Deposited { amount: u64 },
}

struct Account;

impl Decider for Account {
    type Command = u64;
    type Event = Event;
    type State = u64;
    type Error = std::convert::Infallible;

    fn initial_state(&self) -> u64 {
        0
    }

    fn decide(&self, amount: &u64, _: &u64) -> Result<Vec<Event>, Self::Error> {
        Ok(vec![Event::Deposited { amount: *amount }])
    }

    fn evolve(&self, balance: u64, Event::Deposited { amount }: &Event) -> u64 {
        balance + amount
    }
}

fn keyed(key: &str) -> Metadata {
    Metadata {
        idempotency_key: Some(key.to_owned()),
        ..Metadata::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_command_sent_again_on_a_cached_handler_is_written_once() {
    let double = ProtocolDouble::start();
    let store = EventStoreDbStore::connect(&double.url()).await.unwrap();
    let handler = CommandHandler::new(Account, store.clone()).with_cache(100);
    let stream = StreamId::new(format!("account-{}", Uuid::new_v4().simple())).unwrap();

    handler.handle(&stream, 1).await.unwrap();
    let first = handler.handle_with(&stream, 5, keyed("d1")).await.unwrap();
    // The cache holds the state after the first send: the repeat is decided at the stream's
    // current revision, where the server would take the same ids again.
    let again = handler.handle_with(&stream, 5, keyed("d1")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.position, first.position);
    let (one, two) = tokio::join!(
        handler.handle_with(&stream, 7, keyed("d2")),
        handler.handle_with(&stream, 7, keyed("d2")),
    );
    assert_eq!(one.unwrap().position, two.unwrap().position);

    let events: Vec<_> = store
        .read_whole_stream(&stream)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(events.len(), 3, "{events:#?}");
    assert_eq!(handler.load(&stream).await.unwrap().state, 13);
}
