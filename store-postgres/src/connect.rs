//! Opening connections: the pool, the listening connection and lease connections all come from
//! one [`ConnectionSettings`], so they reach the same server the same way (TLS included), and
//! each names the store's schema in its `application_name` (an operator, or a test, can tell one
//! store's connections from another's in `pg_stat_activity`, and terminate exactly those).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use decider_core::StoreError;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};

use crate::error::from_pg;
use crate::tls::{self, SslMode, Tls};

/// A connection opened outside the pool, driven by its owner.
pub(crate) type Connection =
    tokio_postgres::Connection<Socket, <Tls as MakeTlsConnect<Socket>>::Stream>;

/// Where and how a store connects: the server, the credentials and the transport, parsed once
/// from a URL.
///
/// TLS follows libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`;
/// `prefer` when absent, as in libpq and tokio-postgres) and `sslrootcert` (a PEM file of
/// trusted roots; the system's roots when absent), through rustls (the `tls` feature, on by
/// default; without it only `disable` and `prefer` connect, in plaintext, and the other modes
/// are refused as [`StoreError::InvalidInput`] naming the feature):
///
/// | `sslmode` | TLS | the server's certificate |
/// | --- | --- | --- |
/// | `disable` | never | — |
/// | `prefer` | when the server offers it | not checked |
/// | `require` | always | not checked, unless `sslrootcert` is given: then as `verify-ca` |
/// | `verify-ca` | always | signed by a trusted root; any host name |
/// | `verify-full` | always | signed by a trusted root, and names the host connected to |
///
/// A bad `sslmode`, or an `sslrootcert` that cannot be read or holds no certificate, is
/// [`StoreError::InvalidInput`] here; a certificate the mode refuses is
/// [`StoreError::Backend`] when connecting (retrying cannot fix it). Unlike libpq, a named
/// `sslrootcert` must be readable whatever the mode, and `verify-ca`/`verify-full` without one
/// trust the system's roots rather than `~/.postgresql/root.crt`.
///
/// Give these settings to [`PostgresStore::with_pool`](crate::PostgresStore::with_pool) along
/// with a pool of your own: the store's connections outside the pool (the listener, the leases)
/// then use them, so build them from the same URL as the pool, TLS parameters included.
///
/// ```
/// use decider_store_postgres::ConnectionSettings;
///
/// let settings = ConnectionSettings::from_url(
///     "postgres://postgres@db.example.com:5432/app?sslmode=verify-full",
/// )
/// .unwrap();
/// assert_eq!(settings.config().get_dbname(), Some("app"));
/// assert!(ConnectionSettings::from_url("postgres://db.example.com/app?sslmode=bogus").is_err());
/// ```
#[derive(Clone)]
pub struct ConnectionSettings {
    config: tokio_postgres::Config,
    mode: SslMode,
    tls: Tls,
}

impl fmt::Debug for ConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The configuration's own Debug leaves the password out.
        f.debug_struct("ConnectionSettings")
            .field("config", &self.config)
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ConnectionSettings {
    /// Parses `url` (`postgres://user@host:port/db?…`, or libpq's `key=value` form), with its
    /// TLS parameters, and reads the trusted roots they name.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        let (rest, params) = tls::take_tls_params(url)?;
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| StoreError::InvalidInput(format!("bad PostgreSQL URL: {e}")))?;
        let mode = params.mode.unwrap_or(SslMode::Prefer);
        config.ssl_mode(mode.driver_mode());
        let tls = tls::connector(mode, params.root_cert.as_deref())?;
        Ok(Self { config, mode, tls })
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
    // `NoTls` (a build without `tls`) is Copy; the rustls connector is not.
    #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
    pub(crate) async fn connect(&self) -> Result<(Client, Connection), StoreError> {
        self.config.connect(self.tls.clone()).await.map_err(from_pg)
    }

    /// A pool of up to `size` connections that waits at most `timeout` for one.
    // `NoTls` (a build without `tls`) is Copy; the rustls connector is not.
    #[cfg_attr(not(feature = "tls"), allow(clippy::clone_on_copy))]
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
/// (`decider:<schema>:listen`, `decider:<schema>:lease:<projection>`). PostgreSQL keeps the
/// first 63 bytes: a long projection name is cut short, the schema prefix stays.
pub(crate) fn application_name(settings: &ConnectionSettings, schema: &str) -> String {
    settings
        .config
        .get_application_name()
        .map_or_else(|| format!("decider:{schema}"), str::to_owned)
}
