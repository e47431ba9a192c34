//! # decider-eventstoredb-double
//!
//! **A protocol double of EventStoreDB/KurrentDB, for tests** — not a server. It speaks the
//! server's gRPC protocol, generated at build time from the `.proto` files the `kurrentdb` client
//! ships (vendored in `proto/`), on a loopback port, so the real `kurrentdb` client can connect
//! to it with `esdb://127.0.0.1:PORT?tls=false&discoveryInterval=10`. Results obtained against it are results against
//! a double and are labelled so.
//!
//! What it implements, following the server's documented behaviour:
//! - `Streams.Append`: per-stream expected-version checks (`Any`, `NoStream`, `StreamExists`, a
//!   revision), idempotent re-appends of the same event ids by the server's rules (see `log.rs`),
//!   one global log in commit order;
//! - `Streams.Read`: stream reads forwards and backwards from the start, the end or a revision
//!   (inclusive), `StreamNotFound` for a stream without events; `$all` reads from a position
//!   (inclusive) with prefix filters on stream names or event types; subscriptions to a stream
//!   or to `$all` that start *after* their start point, confirm, catch up, send `CaughtUp`, then
//!   follow live appends, with checkpoints for filtered `$all` subscriptions;
//! - `ServerFeatures.GetSupportedMethods`.
//!
//! Like a KurrentDB server it admits [`MAX_STREAMS_PER_CONNECTION`] streams at once on one
//! HTTP/2 connection.
//!
//! What it does not: deletes and tombstones, batch appends, regex filters, link events,
//! `FellBehind` (a slow subscriber is served from the log, never dropped), persistent
//! subscriptions, projections, users, TLS, clustering and gossip.
//!
//! It can be stopped and restarted on the same port with its events kept
//! ([`ProtocolDouble::stop`], [`ProtocolDouble::restart`]), and an append can be held before or
//! after its commit ([`ProtocolDouble::hold_appends`]) to test what a client sees when the server
//! goes away mid-call.
//!
//! ```no_run
//! # async fn example() {
//! let double = decider_eventstoredb_double::ProtocolDouble::start();
//! let url = double.url(); // esdb://127.0.0.1:PORT?tls=false&discoveryInterval=10
//! # let _ = url;
//! double.stop().await;
//! double.restart().await; // same port, same events
//! # }
//! ```
#![deny(missing_docs)]

mod log;
mod proto;
mod quickack;
mod service;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, watch};

use crate::log::{AppendOutcome, Expected, Log, Proposed};
use crate::proto::event_store::client::server_features::server_features_server::ServerFeaturesServer;
use crate::proto::event_store::client::streams::streams_server::StreamsServer;
use crate::quickack::QuickAck;
use crate::service::{FeaturesService, StreamsService};

/// The streams the double admits at once on one HTTP/2 connection: a KurrentDB server's
/// (Kestrel's `Http2.MaxStreamsPerConnection` default, which KurrentDB does not change; see ADR
/// 7). tonic's default would be no limit at all (it overrides hyper's 200 with none).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 100;

/// Where an append may be held, for fault tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Appends are received whole, then wait before they are committed: stopping the double
    /// then loses them entirely.
    BeforeCommit,
    /// Appends are committed, then wait before they are answered: stopping the double then
    /// loses the reply of a write that happened.
    AfterCommit,
}

/// What the services share, and what outlives a stop.
#[derive(Debug)]
struct Shared {
    log: Mutex<Log>,
    /// The number of records, for live subscriptions to wait on.
    head: watch::Sender<usize>,
    fault: Mutex<Option<Fault>>,
    held: Notify,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Log> {
        // The log is never left half-changed by a panic (appends only push), so a poisoned lock
        // still guards a consistent log.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn head_receiver(&self) -> watch::Receiver<usize> {
        self.head.subscribe()
    }

    fn commit(&self, stream: &Bytes, expected: Expected, proposed: Vec<Proposed>) -> AppendOutcome {
        let mut log = self.log();
        let outcome = log.append(stream, expected, proposed);
        let length = log.len();
        drop(log);
        self.head.send_replace(length);
        outcome
    }

    /// Waits forever (until the double is stopped) when appends are held at `point`.
    async fn fault_point(&self, point: Fault) {
        let held = *self.fault.lock().unwrap_or_else(PoisonError::into_inner) == Some(point);
        if held {
            self.held.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// A running (or stopped) protocol double on a fixed loopback port.
#[derive(Debug)]
pub struct ProtocolDouble {
    shared: Arc<Shared>,
    address: SocketAddr,
    server: Mutex<Option<tokio::runtime::Runtime>>,
}

impl ProtocolDouble {
    /// Starts a double with an empty log on a free loopback port.
    ///
    /// # Panics
    /// If no loopback port can be bound: the test cannot run at all then.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|error| panic!("cannot bind a loopback port for the double: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("the double's listener has no address: {error}"));
        let (head, _) = watch::channel(0);
        let double = Self {
            shared: Arc::new(Shared {
                log: Mutex::new(Log::default()),
                head,
                fault: Mutex::new(None),
                held: Notify::new(),
            }),
            address,
            server: Mutex::new(None),
        };
        double.serve(listener);
        double
    }

    /// The connection string for the `kurrentdb` client: one node, no TLS, and a discovery
    /// interval of 10 ms. The client waits one discovery interval (500 ms by default) before its
    /// first attempt to reach even a single node, and between attempts; on loopback that wait
    /// is all the time a connection takes, so every new client (one per test) paid half a second.
    pub fn url(&self) -> String {
        format!("esdb://{}?tls=false&discoveryInterval=10", self.address)
    }

    /// Stops the double as a killed server would: every connection is dropped at once, every
    /// call in flight fails. The log is kept for [`restart`](Self::restart).
    pub async fn stop(&self) {
        let runtime = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            // Dropping a runtime blocks, which an async test must not do on its own thread.
            let _ = tokio::task::spawn_blocking(move || {
                runtime.shutdown_timeout(Duration::from_secs(5));
            })
            .await;
        }
    }

    /// Starts the double again on the same port, with the same events.
    ///
    /// # Panics
    /// If the port cannot be bound again.
    pub async fn restart(&self) {
        self.stop().await;
        let listener = std::net::TcpListener::bind(self.address)
            .unwrap_or_else(|error| panic!("cannot bind {} again: {error}", self.address));
        self.serve(listener);
    }

    /// Holds every append from now on at `point` (`None`: lets them through again).
    pub fn hold_appends(&self, point: Option<Fault>) {
        *self
            .shared
            .fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = point;
    }

    /// Waits until an append is being held.
    pub async fn append_held(&self) {
        self.shared.held.notified().await;
    }

    /// The number of events in the log.
    pub fn event_count(&self) -> usize {
        self.shared.log().len()
    }

    fn serve(&self, listener: std::net::TcpListener) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("protocol-double")
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("cannot build the double's runtime: {error}"));
        let streams = StreamsServer::new(StreamsService {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(16 << 20);
        let features = ServerFeaturesServer::new(FeaturesService);
        runtime.spawn(async move {
            let listener = match listener
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpListener::from_std(listener))
            {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, "the protocol double cannot listen");
                    return;
                }
            };
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(socket, _)| {
                    // Small request/response exchanges must not wait for Nagle's algorithm: not
                    // the double's writes (no delay), nor the client's, which keeps Nagle on and
                    // so must be acknowledged at once (`quickack.rs`).
                    let _ = socket.set_nodelay(true);
                    QuickAck::new(socket)
                });
                Some((accepted, listener))
            });
            let served = tonic::transport::Server::builder()
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .add_service(streams)
                .add_service(features)
                .serve_with_incoming(incoming)
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "the protocol double stopped serving");
            }
        });
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(runtime);
    }
}

impl Drop for ProtocolDouble {
    fn drop(&mut self) {
        let runtime = self
            .server
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}
