//! Waking live subscriptions: appends send a debounced, empty `NOTIFY` after they commit, and one
//! listening connection per store turns notifications into a watch that subscriptions wait on
//! (with a poll timeout, so a lost notification only delays, never loses, an event).

use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::sql;

/// Wait before reconnecting a listener whose connection failed.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// The shortest time between two notifications of one store. Each `NOTIFY` is a transaction of
/// its own (a commit, a WAL flush, a pooled connection); spacing them folds the appends of that
/// millisecond into one, for at most a millisecond more of latency in other processes (this
/// process's subscribers are woken directly).
const MIN_NOTIFY_INTERVAL: Duration = Duration::from_millis(1);

pub(crate) struct Live {
    channel: String,
    listen: Option<tokio_postgres::Config>,
    /// Bumped on every notification, every append of this process, and every listener
    /// (re)connection.
    wake: watch::Sender<u64>,
    listener: OnceLock<AbortOnDrop>,
    notifier: OnceLock<(Arc<Notify>, AbortOnDrop)>,
}

/// A background task that ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Live {
    pub(crate) fn new(channel: String, listen: Option<tokio_postgres::Config>) -> Self {
        Self {
            channel,
            listen,
            wake: watch::Sender::new(0),
            listener: OnceLock::new(),
            notifier: OnceLock::new(),
        }
    }

    /// Called after an append committed: wakes this process's subscribers at once and asks the
    /// notifier to tell other processes. Appends that arrive while a `NOTIFY` is in flight, or
    /// within [`MIN_NOTIFY_INTERVAL`] after it, are folded into the next one.
    pub(crate) fn appended(&self, pool: &Pool) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
        let (pending, _) = self.notifier.get_or_init(|| {
            let pending = Arc::new(Notify::new());
            let task = tokio::spawn(notify_loop(
                pool.clone(),
                self.channel.clone(),
                pending.clone(),
            ));
            (pending, AbortOnDrop(task))
        });
        pending.notify_one();
    }

    /// A receiver that changes when new events may be there; starts the listener on first use.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        if let Some(config) = &self.listen {
            self.listener.get_or_init(|| {
                let task = tokio::spawn(listen_loop(
                    config.clone(),
                    self.channel.clone(),
                    self.wake.clone(),
                ));
                AbortOnDrop(task)
            });
        }
        self.wake.subscribe()
    }
}

async fn notify_loop(pool: Pool, channel: String, pending: Arc<Notify>) {
    loop {
        pending.notified().await;
        let sent = match pool.get().await {
            Ok(client) => match client.execute(sql::NOTIFY, &[&channel]).await {
                Ok(_) => Ok(()),
                Err(error) => {
                    // Whatever went wrong, this connection is not worth handing out again.
                    drop(deadpool_postgres::Object::take(client));
                    Err(error.to_string())
                }
            },
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = sent {
            // Listeners in other processes fall back to polling; nothing is lost.
            tracing::debug!(%error, "could not send the append notification");
        }
        tokio::time::sleep(MIN_NOTIFY_INTERVAL).await;
    }
}

async fn listen_loop(config: tokio_postgres::Config, channel: String, wake: watch::Sender<u64>) {
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let wake_on_messages = async {
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => {
                                wake.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "the listening connection failed");
                                break;
                            }
                        }
                    }
                };
                let listen = async {
                    let quoted = channel.replace('"', "\"\"");
                    match client.batch_execute(&format!("LISTEN \"{quoted}\"")).await {
                        // Whatever was appended while nobody listened is found by this poll.
                        Ok(()) => wake.send_modify(|n| *n = n.wrapping_add(1)),
                        Err(error) => tracing::warn!(%error, "LISTEN failed"),
                    }
                    // Keep the client, and so the connection, alive.
                    std::future::pending::<()>().await;
                };
                futures::future::select(pin!(wake_on_messages), pin!(listen)).await;
            }
            Err(error) => tracing::warn!(%error, "cannot open the listening connection"),
        }
        wake.send_modify(|n| *n = n.wrapping_add(1));
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}
