//! TLS to the server, through rustls: libpq's `sslmode` and `sslrootcert`, read from the
//! connection string, become one connector that the pool, the listening connection and the
//! lease connections share. What each mode checks is described (for users) on
//! [`ConnectionSettings`](crate::ConnectionSettings).

#[cfg(feature = "tls")]
mod connector;
mod params;
#[cfg(feature = "tls")]
mod verify;

use std::str::FromStr;

use decider_core::StoreError;

#[cfg(feature = "tls")]
pub(crate) use connector::{Tls, connector};
pub(crate) use params::take_tls_params;
#[cfg(not(feature = "tls"))]
pub(crate) use plaintext::{Tls, connector};
#[cfg(feature = "tls")]
pub(crate) use verify::CertificateRefused;

/// libpq's `sslmode` values, less `allow` (plaintext first, TLS only if the server insists),
/// which tokio-postgres cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The driver's mode: it only decides whether to ask for TLS; checking the certificate is
    /// the connector's part.
    pub(crate) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        match self {
            Self::Disable => tokio_postgres::config::SslMode::Disable,
            // Without TLS compiled in there is nothing to prefer: plaintext, as the server
            // would answer a client that cannot do TLS.
            Self::Prefer if cfg!(feature = "tls") => tokio_postgres::config::SslMode::Prefer,
            Self::Prefer => tokio_postgres::config::SslMode::Disable,
            Self::Require | Self::VerifyCa | Self::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

impl std::fmt::Display for SslMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = StoreError;

    fn from_str(value: &str) -> Result<Self, StoreError> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            "allow" => Err(StoreError::InvalidInput(
                "sslmode=allow is not supported; use prefer, or disable".to_owned(),
            )),
            other => Err(StoreError::InvalidInput(format!(
                "bad sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
            ))),
        }
    }
}

/// Connections without TLS, for builds without the `tls` feature: what asks for TLS is refused
/// up front, naming the feature, rather than failing at the handshake.
#[cfg(not(feature = "tls"))]
mod plaintext {
    use std::path::Path;

    use decider_core::StoreError;

    use super::SslMode;

    /// The connector of a build without TLS.
    pub(crate) type Tls = tokio_postgres::NoTls;

    /// Plaintext for `disable` and `prefer`; `InvalidInput` for everything that needs TLS.
    pub(crate) fn connector(mode: SslMode, root_cert: Option<&Path>) -> Result<Tls, StoreError> {
        let needs_tls = match (mode, root_cert) {
            (SslMode::Disable | SslMode::Prefer, None) => None,
            (_, Some(path)) => Some(format!("sslrootcert={}", path.display())),
            (mode, None) => Some(format!("sslmode={mode}")),
        };
        match needs_tls {
            None => Ok(tokio_postgres::NoTls),
            Some(asked) => Err(StoreError::InvalidInput(format!(
                "{asked} needs TLS, and this build of decider-store-postgres has none: enable \
                 its `tls` feature (a default feature), or connect with sslmode=disable"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_libpq_mode_but_allow_parses() {
        for (text, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(text.parse::<SslMode>().ok(), Some(mode));
            assert_eq!(mode.to_string(), text);
        }
        for bad in ["allow", "bogus", "REQUIRE", ""] {
            assert!(
                matches!(bad.parse::<SslMode>(), Err(StoreError::InvalidInput(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn verifying_modes_ask_the_driver_for_tls() {
        use tokio_postgres::config::SslMode as Driver;
        assert_eq!(SslMode::Disable.driver_mode(), Driver::Disable);
        let prefer = if cfg!(feature = "tls") {
            Driver::Prefer
        } else {
            Driver::Disable
        };
        assert_eq!(SslMode::Prefer.driver_mode(), prefer);
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(mode.driver_mode(), Driver::Require);
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_root_file_without_a_certificate_is_invalid_input() {
        let path = std::env::temp_dir().join(format!("decider-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let result = connector(SslMode::VerifyCa, Some(&path));
        std::fs::remove_file(&path).unwrap();
        match result {
            Err(StoreError::InvalidInput(message)) => {
                assert!(message.contains("holds no certificate"), "{message}");
            }
            other => panic!("expected InvalidInput, got {:?}", other.map(|_| ())),
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_what_asks_for_it_is_refused_naming_the_feature() {
        assert!(connector(SslMode::Disable, None).is_ok());
        assert!(connector(SslMode::Prefer, None).is_ok());
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            match connector(mode, None) {
                Err(StoreError::InvalidInput(message)) => {
                    assert!(message.contains("`tls` feature"), "{message}");
                }
                other => panic!("{mode}: expected InvalidInput, got {:?}", other.map(|_| ())),
            }
        }
        let root = std::path::Path::new("/etc/ssl/certs/ca.pem");
        assert!(connector(SslMode::Prefer, Some(root)).is_err());
    }
}
