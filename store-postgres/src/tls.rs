//! TLS to the server, through rustls: libpq's `sslmode` and `sslrootcert`, read from the
//! connection string, become one connector that the pool, the listening connection and the
//! lease connections share. What each mode checks is described (for users) on
//! [`ConnectionSettings`](crate::ConnectionSettings).

mod params;
mod verify;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use decider_core::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

pub(crate) use params::take_tls_params;
pub(crate) use verify::CertificateRefused;

use verify::{Check, ServerCertificates};

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
            Self::Prefer => tokio_postgres::config::SslMode::Prefer,
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

/// The connector for `mode`, trusting the certificates of `root_cert` (a PEM file) or, when
/// there is none and the mode verifies, the system's roots.
pub(crate) fn connector(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<MakeRustlsConnect, StoreError> {
    // The provider is handed to the config rather than installed process-wide: other crates of
    // the process may bring aws-lc-rs too, and with two providers compiled in and none
    // installed, rustls's `ClientConfig::builder()` panics.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let file_roots = root_cert.map(roots_from_file).transpose()?;
    let roots = match (mode, file_roots) {
        (SslMode::Disable | SslMode::Prefer, _) | (SslMode::Require, None) => None,
        (_, Some(roots)) => Some(roots),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => Some(system_roots(mode)?),
    };
    let check = match roots {
        None => Check::AnyCertificate,
        Some(roots) => {
            let chain = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(&provider))
                .build()
                .map_err(|e| {
                    StoreError::InvalidInput(format!("sslmode={mode}: bad trusted roots: {e}"))
                })?;
            if mode == SslMode::VerifyFull {
                Check::ChainAndName(chain)
            } else {
                Check::Chain(chain)
            }
        }
    };
    let verifier = ServerCertificates::new(mode, check, &provider);
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::InvalidInput(format!("TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificates of the PEM file at `path`.
fn roots_from_file(path: &Path) -> Result<Arc<RootCertStore>, StoreError> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| StoreError::InvalidInput(format!("cannot read sslrootcert {shown}: {e}")))?;
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|e| {
            StoreError::InvalidInput(format!("sslrootcert {shown} is not valid PEM: {e}"))
        })?;
        roots.add(certificate).map_err(|e| {
            StoreError::InvalidInput(format!("sslrootcert {shown} holds a bad certificate: {e}"))
        })?;
    }
    if roots.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "sslrootcert {shown} holds no certificate"
        )));
    }
    Ok(Arc::new(roots))
}

/// The system's trusted roots, read once per process: every connector that verifies without
/// `sslrootcert` shares them.
fn system_roots(mode: SslMode) -> Result<Arc<RootCertStore>, StoreError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "skipping part of the system's trusted roots");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "skipping unparsable system root certificates");
        }
        if added == 0 {
            let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
            return Err(format!("found none ({})", errors.join("; ")));
        }
        Ok(Arc::new(roots))
    });
    roots.clone().map_err(|reason| {
        StoreError::InvalidInput(format!(
            "sslmode={mode} verifies the server against the system's trusted roots, and there \
             are none: {reason}; give sslrootcert=/path/to/ca.pem"
        ))
    })
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
        assert_eq!(SslMode::Prefer.driver_mode(), Driver::Prefer);
        for mode in [SslMode::Require, SslMode::VerifyCa, SslMode::VerifyFull] {
            assert_eq!(mode.driver_mode(), Driver::Require);
        }
    }

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
}
