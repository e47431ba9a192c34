//! Faults are weather: the store's own connections (pool, listener, leases) are terminated again
//! and again, by their `application_name`, while writers, an exactly-once projection and a saga
//! run. Nothing is lost or applied twice, and everything comes back by itself.
// Test code: a failed unwrap is a failed test, in helpers as much as in #[test] bodies.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use decider_core::projection::{
    CheckpointedSink, Lease, Projection, ProjectionError, ProjectionRunner, RunnerOptions,
    RunnerState, SagaHandler, Sink, SinkError, StatusHandle,
};
use decider_core::{
    CommandHandler, Decider, EventFilter, EventStore, JsonCodec, Metadata, RecordedEvent, Saga,
    StreamId,
};
use decider_store_postgres::{
    PgTransactionalSink, PostgresOptions, PostgresStore, TransactionalHandler, handle_error,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use support::{drop_store, fresh_store_with, raw_client, terminate_connections_of};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum OrderEvent {
    Placed { order: u32 },
    Shipped { order: u32 },
}

#[derive(Debug, Clone)]
enum OrderCommand {
    Place { order: u32 },
    Ship { order: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum OrderState {
    None,
    Placed,
    Shipped,
}

#[derive(Debug)]
struct NotAllowed;

impl std::fmt::Display for NotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not allowed in this state")
    }
}

struct Order;

impl Decider for Order {
    type Command = OrderCommand;
    type Event = OrderEvent;
    type State = OrderState;
    type Error = NotAllowed;

    fn initial_state(&self) -> OrderState {
        OrderState::None
    }

    fn decide(
        &self,
        command: &OrderCommand,
        state: &OrderState,
    ) -> Result<Vec<OrderEvent>, NotAllowed> {
        match (command, state) {
            (OrderCommand::Place { order }, OrderState::None) => {
                Ok(vec![OrderEvent::Placed { order: *order }])
            }
            (OrderCommand::Ship { order }, OrderState::Placed) => {
                Ok(vec![OrderEvent::Shipped { order: *order }])
            }
            _ => Err(NotAllowed),
        }
    }

    fn evolve(&self, _: OrderState, event: &OrderEvent) -> OrderState {
        match event {
            OrderEvent::Placed { .. } => OrderState::Placed,
            OrderEvent::Shipped { .. } => OrderState::Shipped,
        }
    }
}

/// Ships every placed order.
struct Shipping;

impl Saga for Shipping {
    type Event = OrderEvent;
    type Command = OrderCommand;

    fn react(&self, event: &OrderEvent) -> Vec<OrderCommand> {
        match event {
            OrderEvent::Placed { order } => vec![OrderCommand::Ship { order: *order }],
            OrderEvent::Shipped { .. } => vec![],
        }
    }
}

fn order_stream(order: u32) -> StreamId {
    StreamId::new(format!("order-{order}")).unwrap()
}

/// Counts every delivery of every event — not idempotent, so a second delivery shows as 2.
struct Counter {
    schema: String,
}

impl TransactionalHandler for Counter {
    async fn handle(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        batch: &[RecordedEvent],
    ) -> Result<(), SinkError> {
        let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
        transaction
            .execute(
                &format!(
                    "INSERT INTO \"{}\".counted (event_id, n) SELECT id, 1 FROM unnest($1::uuid[]) AS b(id) \
                     ON CONFLICT (event_id) DO UPDATE SET n = counted.n + 1",
                    self.schema
                ),
                &[&ids],
            )
            .await
            .map_err(handle_error)?;
        Ok(())
    }
}

fn spawn<K: Sink, L: Lease>(
    runner: ProjectionRunner<PostgresStore, K, L>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Result<(), ProjectionError>> {
    tokio::spawn(async move {
        runner
            .run(async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            })
            .await
    })
}

/// Remembers whether `status` was ever seen reconnecting or failed.
fn sample(status: StatusHandle, reconnected: Arc<AtomicBool>, failed: Arc<AtomicBool>) {
    tokio::spawn(async move {
        loop {
            match status.get().state {
                RunnerState::Reconnecting { .. } => reconnected.store(true, Ordering::SeqCst),
                RunnerState::Failed { error } => {
                    eprintln!("{} failed: {error}", status.get().projection);
                    failed.store(true, Ordering::SeqCst);
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_the_stores_connections_again_and_again_loses_and_doubles_nothing() {
    const ORDERS: u32 = 200;
    const WRITERS: u32 = 4;
    let store = fresh_store_with(PostgresOptions {
        pool_size: 8,
        ..PostgresOptions::default()
    })
    .await;
    store
        .pool()
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE TABLE \"{}\".counted (event_id uuid PRIMARY KEY, n int NOT NULL)",
            store.schema()
        ))
        .await
        .unwrap();
    let options = RunnerOptions {
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(500),
        status_interval: Duration::from_millis(50),
        ..RunnerOptions::default()
    };
    let projection = ProjectionRunner::new(
        store.clone(),
        Projection::new("counted"),
        PgTransactionalSink::new(
            store.clone(),
            Counter {
                schema: store.schema().to_owned(),
            },
        ),
    )
    .with_options(options.clone())
    .with_lease(store.leases().unwrap());
    let saga = ProjectionRunner::new(
        store.clone(),
        Projection::new("shipping").with_filter(EventFilter::all().with_event_types(["Placed"])),
        CheckpointedSink::new(
            SagaHandler::new(
                Shipping,
                JsonCodec::<OrderEvent>::default(),
                CommandHandler::new(Order, store.clone()).with_cache(1_000),
                |command: &OrderCommand| match command {
                    OrderCommand::Place { order } | OrderCommand::Ship { order } => {
                        order_stream(*order)
                    }
                },
            ),
            store.checkpoints(),
            store.dead_letters(),
        ),
    )
    .with_options(options)
    .with_lease(store.leases().unwrap());
    let (reconnected, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let statuses = [projection.status_handle(), saga.status_handle()];
    for status in &statuses {
        sample(status.clone(), reconnected.clone(), failed.clone());
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runners = [spawn(projection, stopped.clone()), spawn(saga, stopped)];

    // Writers place orders as a careful client would: an error it may retry is sent again
    // under the same idempotency key (the handler itself already retried it a few times).
    let surfaced = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let orders = CommandHandler::new(Order, store.clone()).with_cache(1_000);
            let surfaced = surfaced.clone();
            tokio::spawn(async move {
                for order in (writer..ORDERS).step_by(WRITERS as usize) {
                    let key = Metadata::default().with_idempotency_key(format!("place-{order}"));
                    loop {
                        match orders
                            .handle_with(
                                &order_stream(order),
                                OrderCommand::Place { order },
                                key.clone(),
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(error) if error.is_retryable() => {
                                surfaced.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(error) => panic!("order {order}: {error}"),
                        }
                    }
                    // Spread the orders over the time connections are being terminated.
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            })
        })
        .collect();
    let monitor = raw_client().await;
    let mut killed = 0;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        killed += terminate_connections_of(&monitor, store.schema()).await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(killed >= 12, "only {killed} connections were terminated");

    // Everything comes back by itself: both runners live, lag 0, every order shipped.
    let counted = |store: PostgresStore| async move {
        let client = store.pool().get().await?;
        let rows = client
            .query(
                &format!("SELECT event_id, n FROM \"{}\".counted", store.schema()),
                &[],
            )
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(
            rows.iter()
                .map(|row| (row.get::<_, Uuid>(0), row.get::<_, i32>(1)))
                .collect::<BTreeMap<_, _>>(),
        )
    };
    tokio::time::timeout(WAIT, async {
        loop {
            let settled = statuses
                .iter()
                .all(|s| s.get().state == RunnerState::Live && s.get().lag == Some(0));
            let all = counted(store.clone()).await.map(|c| c.len()).unwrap_or(0);
            if settled && all == 2 * ORDERS as usize {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "did not recover: {:?}",
            statuses.iter().map(StatusHandle::get).collect::<Vec<_>>()
        )
    });
    assert!(!failed.load(Ordering::SeqCst), "a runner failed");
    assert!(
        reconnected.load(Ordering::SeqCst),
        "no runner ever had to reconnect"
    );

    let counted = counted(store.clone()).await.unwrap();
    assert!(
        counted.values().all(|&n| n == 1),
        "an event was projected twice"
    );
    for order in 0..ORDERS {
        let events: Vec<RecordedEvent> = store
            .read_whole_stream(&order_stream(order))
            .try_collect()
            .await
            .unwrap();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["Placed", "Shipped"], "order {order}");
        assert!(
            events.iter().all(|e| counted.get(&e.id) == Some(&1)),
            "order {order}"
        );
    }
    eprintln!(
        "terminated {killed} connections; {} errors reached the writers",
        surfaced.load(Ordering::SeqCst)
    );

    stop.send_replace(true);
    for runner in runners {
        runner.await.unwrap().unwrap();
    }
    drop_store(store).await;
}

/// Collects the first `count` events of `subscription`; any error or end fails the test.
fn collect(
    subscription: impl decider_core::Subscription,
    count: usize,
) -> tokio::task::JoinHandle<Vec<RecordedEvent>> {
    tokio::spawn(async move {
        let mut subscription = std::pin::pin!(subscription);
        let mut events = Vec::new();
        while events.len() < count {
            match subscription.try_next().await {
                Ok(Some(decider_core::SubscriptionMessage::Event(event))) => events.push(event),
                Ok(Some(decider_core::SubscriptionMessage::CaughtUp)) => {}
                Ok(None) => panic!("the subscription ended after {} events", events.len()),
                Err(error) => panic!(
                    "the subscription failed after {} events: {error}",
                    events.len()
                ),
            }
        }
        events
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_subscriptions_ride_out_terminated_connections_without_a_gap_or_a_repeat() {
    const EVENTS: usize = 300;
    let store = fresh_store_with(PostgresOptions {
        pool_size: 4,
        ..PostgresOptions::default()
    })
    .await;
    let stream = StreamId::new("ledger-1").unwrap();
    let all = store.subscribe_all(None, &EventFilter::all());
    let one = store.subscribe_stream(&stream, None);
    let (all, one) = (collect(all, EVENTS), collect(one, EVENTS));
    let writer = tokio::spawn({
        let (store, stream) = (store.clone(), stream.clone());
        async move {
            for n in 0..EVENTS {
                let event = decider_core::EventData::json("Entry", format!(r#"{{"n":{n}}}"#));
                // Fixed ids: a retry after an error is the same append, written once.
                let event = event.with_id(Uuid::new_v5(&Uuid::NAMESPACE_OID, &n.to_le_bytes()));
                while let Err(error) = store
                    .append(
                        &stream,
                        decider_core::ExpectedVersion::Any,
                        vec![event.clone()],
                    )
                    .await
                {
                    assert!(error.is_retryable(), "{error}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
    });
    let monitor = raw_client().await;
    let mut killed = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        killed += terminate_connections_of(&monitor, store.schema()).await;
    }
    assert!(killed >= 8, "only {killed} connections were terminated");
    tokio::time::timeout(WAIT, writer).await.unwrap().unwrap();
    for events in [
        tokio::time::timeout(WAIT, all),
        tokio::time::timeout(WAIT, one),
    ] {
        let events = events.await.unwrap().unwrap();
        let revisions: Vec<u64> = events.iter().map(|e| e.revision).collect();
        assert_eq!(
            revisions,
            (0..EVENTS as u64).collect::<Vec<_>>(),
            "a gap or a repeat"
        );
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    }
    drop_store(store).await;
}
