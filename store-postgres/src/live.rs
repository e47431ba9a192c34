//! Waking live subscriptions: appends send a debounced `NOTIFY` after they commit, and one
//! listening connection per store turns notifications into a watch that subscriptions wait on
//! (with a poll timeout, so a lost notification only delays, never loses, an event).
//!
//! `$all` subscriptions wake on every append. A stream subscription wakes on appends of this
//! process to its own stream, and on notifications from other stores (which do not say which
//! stream): many waiting on their own streams do not all query on every append. A store's own
//! notifications carry its origin and are ignored by its listener, having woken its subscribers
//! directly.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::connect::ConnectionSettings;
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
    listen: Option<ConnectionSettings>,
    /// Bumped on every notification of another store, every append of this process, and every
    /// listener (re)connection: what `$all` subscriptions wait on.
    wake: watch::Sender<u64>,
    /// Bumped on every notification of another store and every listener (re)connection: what
    /// stream subscriptions wait on, beside their stream's own watch.
    remote: watch::Sender<u64>,
    /// The streams that subscriptions of this process wait on, bumped by this process's appends.
    streams: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Sent as the payload of this store's notifications, so that its listener can skip them.
    origin: String,
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
    pub(crate) fn new(channel: String, listen: Option<ConnectionSettings>) -> Self {
        Self {
            channel,
            listen,
            wake: watch::Sender::new(0),
            remote: watch::Sender::new(0),
            streams: Mutex::new(HashMap::new()),
            origin: uuid::Uuid::new_v4().simple().to_string(),
            listener: OnceLock::new(),
            notifier: OnceLock::new(),
        }
    }

    /// Called after an append committed: wakes this process's subscribers at once and asks the
    /// notifier to tell other processes. Appends that arrive while a `NOTIFY` is in flight, or
    /// within [`MIN_NOTIFY_INTERVAL`] after it, are folded into the next one.
    pub(crate) fn appended(&self, pool: &Pool, stream: &str) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
        if let Some(waiting) = self.streams().get(stream) {
            waiting.send_modify(|n| *n = n.wrapping_add(1));
        }
        let (pending, _) = self.notifier.get_or_init(|| {
            let pending = Arc::new(Notify::new());
            let task = tokio::spawn(notify_loop(
                pool.clone(),
                self.channel.clone(),
                self.origin.clone(),
                pending.clone(),
            ));
            (pending, AbortOnDrop(task))
        });
        pending.notify_one();
    }

    /// A receiver that changes when new events may be there; starts the listener on first use.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.listen();
        self.wake.subscribe()
    }

    /// Receivers that change when new events of `stream` may be there: one for this process's
    /// appends to it, one for everything from elsewhere. Call [`unwatch_stream`](Self::unwatch_stream)
    /// with the stream when done.
    pub(crate) fn watch_stream(
        &self,
        stream: &str,
    ) -> (watch::Receiver<u64>, watch::Receiver<u64>) {
        self.listen();
        let local = self
            .streams()
            .entry(stream.to_owned())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        (local, self.remote.subscribe())
    }

    /// Forgets `stream` once no subscription waits on it any more.
    pub(crate) fn unwatch_stream(&self, stream: &str) {
        let mut streams = self.streams();
        if streams
            .get(stream)
            .is_some_and(|waiting| waiting.receiver_count() == 0)
        {
            streams.remove(stream);
        }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // Every critical section is one map operation: a panic cannot leave it half done.
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn listen(&self) {
        if let Some(settings) = &self.listen {
            self.listener.get_or_init(|| {
                let task = tokio::spawn(listen_loop(
                    settings.clone(),
                    self.channel.clone(),
                    self.origin.clone(),
                    [self.wake.clone(), self.remote.clone()],
                ));
                AbortOnDrop(task)
            });
        }
    }
}

async fn notify_loop(pool: Pool, channel: String, origin: String, pending: Arc<Notify>) {
    loop {
        pending.notified().await;
        let sent = match pool.get().await {
            Ok(client) => match client.execute(sql::NOTIFY, &[&channel, &origin]).await {
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

async fn listen_loop(
    settings: ConnectionSettings,
    channel: String,
    origin: String,
    wakes: [watch::Sender<u64>; 2],
) {
    let wake = || {
        for wake in &wakes {
            wake.send_modify(|n| *n = n.wrapping_add(1));
        }
    };
    loop {
        match settings.connect().await {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let wake_on_messages = async {
                    while let Some(message) = messages.next().await {
                        match message {
                            // This store's own: its subscribers were woken when it appended.
                            Ok(AsyncMessage::Notification(note)) if note.payload() == origin => {}
                            Ok(AsyncMessage::Notification(_)) => wake(),
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
                        Ok(()) => wake(),
                        Err(error) => tracing::warn!(%error, "LISTEN failed"),
                    }
                    // Keep the client, and so the connection, alive.
                    std::future::pending::<()>().await;
                };
                futures::future::select(pin!(wake_on_messages), pin!(listen)).await;
            }
            Err(error) => tracing::warn!(%error, "cannot open the listening connection"),
        }
        wake();
        tokio::time::sleep(RELISTEN_DELAY).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A pool that is never asked for a connection that works: the notifier's attempts fail
    /// and are only logged.
    fn unreachable_pool() -> Pool {
        ConnectionSettings::from_url("host=127.0.0.1 port=1 user=nobody sslmode=disable")
            .unwrap()
            .pool(1, Duration::from_secs(1))
            .unwrap()
    }

    #[tokio::test]
    async fn a_stream_subscription_wakes_on_its_own_stream_only() {
        let live = Live::new("test".to_owned(), None);
        let pool = unreachable_pool();
        let mut all = live.watch();
        let (mut mine, remote) = live.watch_stream("account-1");
        let (mut also_mine, _) = live.watch_stream("account-1");

        live.appended(&pool, "account-2");
        assert!(all.has_changed().unwrap());
        assert!(
            !mine.has_changed().unwrap(),
            "woken by another stream's append"
        );
        all.borrow_and_update();

        live.appended(&pool, "account-1");
        assert!(all.has_changed().unwrap());
        assert!(mine.has_changed().unwrap());
        assert!(also_mine.has_changed().unwrap());
        assert!(!remote.has_changed().unwrap());
        mine.borrow_and_update();
        also_mine.borrow_and_update();
    }

    #[tokio::test]
    async fn a_stream_is_forgotten_when_its_last_subscription_ends() {
        let live = Live::new("test".to_owned(), None);
        let first = live.watch_stream("account-1");
        let second = live.watch_stream("account-1");
        drop(first);
        live.unwatch_stream("account-1");
        assert!(live.streams().contains_key("account-1"), "one still waits");
        drop(second);
        live.unwatch_stream("account-1");
        assert!(live.streams().is_empty());
    }
}
