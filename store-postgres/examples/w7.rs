//! Workload W7 of docs/benchmarks.md — decisions by query through `DecisionHandler` — on
//! PostgreSQL, beside W1's plain stream commands through `CommandHandler` (no cache) in the
//! same run.
//!
//! ```text
//! cargo run --release -p decider-store-postgres --example w7     # about 30 seconds
//! ```
//!
//! - `disjoint`: the W1 runs (C=1 A=500 D=5, C=16 A=2,000 D=5): client `c` takes accounts
//!   c, c + C, …, one deposit at a time. The stream side handles `Deposit` on the account's
//!   stream (read it, fold, decide, append with `Exact`); the DCB side decides the same
//!   deposit on the query "events tagged `account:<a>`" (read by query, fold, decide, append
//!   to a new stream on the condition). Clients never share an account, so a DCB conflict
//!   would be a false one. Stream runs and DCB runs alternate (stream, DCB, DCB, stream) and
//!   each side's rate is over its two runs, so that drift weighs on both.
//! - `contended`: C=16 clients decide 100 deposits each on one shared tag: every decision
//!   that another committed after its read is refused and decided again (the handler's
//!   retries, with backoff). The line reports the conflicts per 1,000 decisions.
//!
//! PostgreSQL is `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/test`); the run
//! works in a schema of its own, `decider_w7_<uuid>`, dropped at the end.
// A benchmark that fails should stop loudly, and printing its figures is what it is for.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use decider_core::dcb::{
    AppendCondition, DcbStore, DecisionHandler, DecisionModel, Query, QueryItem, Tag,
};
use decider_core::{
    AppendResult, Category, CommandHandler, Decider, Direction, EventData, EventFilter, EventStore,
    EventStream, ExpectedVersion, Position, RetryPolicy, StoreError, StreamFrom, StreamId,
    Subscription,
};
use decider_store_postgres::{PostgresOptions, PostgresStore};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Plaintext, as W1 runs: set `sslmode=disable` in your own `DATABASE_URL` too.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";

/// Connections in the store's pool: the most clients of any run.
const POOL_SIZE: usize = 16;

// --- the domain ------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
enum Event {
    Deposited { account: u64, amount: u64 },
}

/// A deposit of `amount` to account `account`.
struct Deposit {
    account: u64,
    amount: u64,
}

/// One account, as a stream decider (W1) and, by its tag, as a decision model (W7).
struct Account;

impl Decider for Account {
    type Command = Deposit;
    type Event = Event;
    type State = u64;
    type Error = std::convert::Infallible;

    fn initial_state(&self) -> u64 {
        0
    }

    fn decide(&self, deposit: &Deposit, _: &u64) -> Result<Vec<Event>, Self::Error> {
        Ok(vec![Event::Deposited {
            account: deposit.account,
            amount: deposit.amount,
        }])
    }

    fn evolve(&self, balance: u64, Event::Deposited { amount, .. }: &Event) -> u64 {
        balance + amount
    }
}

fn account_tag(account: u64) -> Tag {
    Tag::pair("account", account).unwrap()
}

impl DecisionModel for Account {
    fn query(&self, deposit: &Deposit) -> Query {
        Query::from(QueryItem::tagged([account_tag(deposit.account)]).with_types(["Deposited"]))
    }

    fn tags(&self, Event::Deposited { account, .. }: &Event) -> Vec<Tag> {
        vec![account_tag(*account)]
    }

    fn category(&self) -> Category {
        Category::new("deposit")
    }
}

// --- a store that counts refused conditions --------------------------------------------------

/// The store, counting `append_if` calls and the conditions that failed.
#[derive(Clone)]
struct Counting {
    store: PostgresStore,
    appends: Arc<AtomicU64>,
    conflicts: Arc<AtomicU64>,
}

impl EventStore for Counting {
    fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> impl Future<Output = Result<AppendResult, StoreError>> + Send {
        self.store.append(stream, expected, events)
    }

    fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamFrom,
        direction: Direction,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        self.store.read_stream(stream, from, direction, limit)
    }

    fn read_all(
        &self,
        after: Option<Position>,
        limit: Option<u64>,
        filter: &EventFilter,
    ) -> impl EventStream + use<> {
        self.store.read_all(after, limit, filter)
    }

    fn head_position(&self) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send {
        self.store.head_position()
    }

    fn subscribe_all(
        &self,
        after: Option<Position>,
        filter: &EventFilter,
    ) -> impl Subscription + use<> {
        self.store.subscribe_all(after, filter)
    }

    fn subscribe_stream(&self, stream: &StreamId, after: Option<u64>) -> impl Subscription + use<> {
        self.store.subscribe_stream(stream, after)
    }
}

impl DcbStore for Counting {
    fn read_query(
        &self,
        query: &Query,
        after: Option<Position>,
        limit: Option<u64>,
    ) -> impl EventStream + use<> {
        self.store.read_query(query, after, limit)
    }

    async fn append_if(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: AppendCondition,
    ) -> Result<AppendResult, StoreError> {
        self.appends.fetch_add(1, Ordering::Relaxed);
        let result = self
            .store
            .append_if(stream, expected, events, condition)
            .await;
        if result.as_ref().is_err_and(StoreError::is_condition_failed) {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}

// --- the runs --------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Workload {
    clients: usize,
    accounts: usize,
    deposits: usize,
}

impl Workload {
    fn commands(self) -> usize {
        self.accounts * self.deposits
    }

    fn label(self) -> String {
        format!(
            "clients={} accounts={} deposits={}",
            self.clients, self.accounts, self.deposits
        )
    }
}

const DISJOINT: [Workload; 2] = [
    Workload {
        clients: 1,
        accounts: 500,
        deposits: 5,
    },
    Workload {
        clients: 16,
        accounts: 2_000,
        deposits: 5,
    },
];

/// Runs the workload's clients; `work(account)` is one command. Returns the elapsed seconds.
async fn drive<F, Fut>(workload: Workload, work: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workload.clients)
        .map(|c| {
            let work = work.clone();
            tokio::spawn(async move {
                for _ in 0..workload.deposits {
                    for a in (c..workload.accounts).step_by(workload.clients) {
                        work(a).await;
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed().as_secs_f64()
}

/// W1's commands, without cache, on streams `account-<run>-<a>`.
async fn stream_run(store: &PostgresStore, workload: Workload, run: &str) -> f64 {
    let handler = Arc::new(CommandHandler::new(Account, store.clone()));
    let streams: Arc<Vec<StreamId>> = Arc::new(
        (0..workload.accounts)
            .map(|a| StreamId::new(format!("account-{run}-{a}")).unwrap())
            .collect(),
    );
    drive(workload, move |a| {
        let (handler, streams) = (handler.clone(), streams.clone());
        async move {
            let deposit = Deposit {
                account: a as u64,
                amount: 1,
            };
            handler.handle(&streams[a], deposit).await.unwrap();
        }
    })
    .await
}

/// The same deposits as decisions on the accounts' tags, accounts `base..base + A`.
async fn decision_run(store: &Counting, workload: Workload, base: u64) -> f64 {
    let handler = Arc::new(DecisionHandler::new(Account, store.clone()));
    let secs = drive(workload, move |a| {
        let handler = handler.clone();
        async move {
            let deposit = Deposit {
                account: base + a as u64,
                amount: 1,
            };
            handler.handle(&deposit).await.unwrap();
        }
    })
    .await;
    let first = Account.query(&Deposit {
        account: base,
        amount: 0,
    });
    let balance =
        futures::TryStreamExt::try_collect::<Vec<_>>(store.read_query(&first, None, None))
            .await
            .unwrap()
            .len();
    assert_eq!(balance, workload.deposits, "a deposit went missing");
    secs
}

async fn disjoint(store: &PostgresStore, counting: &Counting, workload: Workload, base: u64) {
    let label = workload.label();
    let before = counting.conflicts.load(Ordering::Relaxed);
    let stream_a = stream_run(store, workload, &format!("{base}a")).await;
    let dcb_a = decision_run(counting, workload, base).await;
    let dcb_b = decision_run(counting, workload, base + workload.accounts as u64).await;
    let stream_b = stream_run(store, workload, &format!("{base}b")).await;
    let conflicts = counting.conflicts.load(Ordering::Relaxed) - before;
    let commands = 2.0 * workload.commands() as f64;
    let (stream_rate, dcb_rate) = (commands / (stream_a + stream_b), commands / (dcb_a + dcb_b));
    println!(
        "W7 postgres disjoint {label} decisions={} secs={:.3} decisions/s={dcb_rate:.0} \
         w1_commands/s={stream_rate:.0} ratio={:.2} conflicts={conflicts} \
         rounds_secs=[{stream_a:.2} {dcb_a:.2} {dcb_b:.2} {stream_b:.2}]",
        commands as u64,
        dcb_a + dcb_b,
        dcb_rate / stream_rate,
    );
}

async fn contended(counting: &Counting) {
    const CLIENTS: usize = 16;
    const DECISIONS: usize = 100;
    let handler = Arc::new(
        DecisionHandler::new(Account, counting.clone()).with_retry_policy(RetryPolicy {
            max_retries: 1_000,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(20),
            ..RetryPolicy::default()
        }),
    );
    let account = u64::MAX / 2;
    let (appends, conflicts) = (
        counting.appends.load(Ordering::Relaxed),
        counting.conflicts.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let handler = handler.clone();
            tokio::spawn(async move {
                for _ in 0..DECISIONS {
                    handler
                        .handle(&Deposit { account, amount: 1 })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let decisions = (CLIENTS * DECISIONS) as f64;
    let appends = counting.appends.load(Ordering::Relaxed) - appends;
    let conflicts = counting.conflicts.load(Ordering::Relaxed) - conflicts;
    println!(
        "W7 postgres contended clients={CLIENTS} tags=1 decisions={decisions} secs={secs:.3} \
         decisions/s={:.0} appends={appends} conflicts={conflicts} \
         conflicts_per_1000_decisions={:.0}",
        decisions / secs,
        1_000.0 * conflicts as f64 / decisions,
    );
}

fn main() {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let schema = format!("decider_w7_{}", Uuid::new_v4().simple());
        let store = PostgresStore::connect_with(
            &url,
            PostgresOptions {
                schema,
                pool_size: POOL_SIZE,
                ..PostgresOptions::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("cannot reach PostgreSQL at {url}: {error}"));
        store.migrate().await.unwrap();
        // Every connection open before anything is timed.
        let mut clients = Vec::new();
        for _ in 0..POOL_SIZE {
            clients.push(store.pool().get().await.unwrap());
        }
        drop(clients);
        println!(
            "W7 postgres pool={POOL_SIZE} client_cores={} schema={}",
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            store.schema()
        );
        let counting = Counting {
            store: store.clone(),
            appends: Arc::default(),
            conflicts: Arc::default(),
        };
        let runs = tokio::spawn({
            let (store, counting) = (store.clone(), counting.clone());
            async move {
                for (run, workload) in DISJOINT.into_iter().enumerate() {
                    disjoint(&store, &counting, workload, 1_000_000 * run as u64).await;
                }
                contended(&counting).await;
            }
        })
        .await;
        // Dropped also when a run failed, before its panic goes on.
        store.drop_schema().await.unwrap();
        if let Err(failed) = runs {
            std::panic::resume_unwind(failed.into_panic());
        }
    });
}
