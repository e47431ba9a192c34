//! Opening connections: the pool, the listening connection and lease connections all come from
//! one [`ConnectionSettings`], so they reach the same server the same way, and each names the
//! store's schema in its `application_name` (an operator, or a test, can tell one store's
//! connections from another's in `pg_stat_activity`, and terminate exactly those).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use decider_core::StoreError;
use tokio_postgres::tls::NoTlsStream;
use tokio_postgres::{Client, NoTls, Socket};

use crate::error::from_pg;

/// The TLS connector every connection of the store uses.
type Tls = NoTls;

/// A connection opened outside the pool, driven by its owner.
pub(crate) type Connection = tokio_postgres::Connection<Socket, NoTlsStream>;

/// Where and how a store connects: the server, the credentials and the transport, parsed once
/// from a URL.
///
/// ```
/// use decider_store_postgres::ConnectionSettings;
///
/// let settings = ConnectionSettings::from_url("postgres://postgres@127.0.0.1:5432/app").unwrap();
/// assert_eq!(settings.config().get_dbname(), Some("app"));
/// ```
#[derive(Clone)]
pub struct ConnectionSettings {
    config: tokio_postgres::Config,
    tls: Tls,
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration's own Debug leaves the password out.
        f.debug_struct("ConnectionSettings")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConnectionSettings {
    /// Parses `url` (`postgres://user@host:port/db?…`, or libpq's `key=value` form).
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StoreError::InvalidInput(format!("bad PostgreSQL URL: {e}")))?;
        Ok(Self { config, tls: NoTls })
    }

    /// The driver's configuration.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// The same settings with `name` as the connections' `application_name`.
    pub(crate) fn named(&self, name: &str) -> Self {
        let mut named = self.clone();
        named.config.application_name(name);
        named
    }

    /// Opens one connection; the caller drives the returned [`Connection`].
    pub(crate) async fn connect(&self) -> Result<(Client, Connection), StoreError> {
        self.config
            .connect(self.tls.clone())
            .await
            .map_err(|e| from_pg(&e))
    }

    /// A pool of up to `size` connections that waits at most `timeout` for one.
    pub(crate) fn pool(&self, size: usize, timeout: Duration) -> Result<Pool, StoreError> {
        let manager = Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::InvalidInput(format!("cannot build the pool: {e}")))
    }
}

/// The `application_name` of a store's connections: the one set in the URL, or
/// `decider:<schema>`; connections outside the pool add what they are for
/// (`decider:<schema>:listen`, `decider:<schema>:lease:<projection>`).
pub(crate) fn application_name(settings: &ConnectionSettings, schema: &str) -> String {
    settings
        .config
        .get_application_name()
        .map_or_else(|| format!("decider:{schema}"), str::to_owned)
}
