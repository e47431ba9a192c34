//! The rustls connector (feature `tls`): libpq's modes become one `MakeRustlsConnect` that the
//! pool, the listening connection and the lease connections share.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use decider_core::StoreError;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::SslMode;
use super::verify::{Check, ServerCertificates};

/// The connector of a build with TLS (it also opens plaintext connections, under
/// `sslmode=disable` or a `prefer` the server declines).
pub(crate) type Tls = MakeRustlsConnect;

/// The connector for `mode`, trusting the certificates of `root_cert` (a PEM file) or, when
/// there is none and the mode verifies, the system's roots.
pub(crate) fn connector(mode: SslMode, root_cert: Option<&Path>) -> Result<Tls, StoreError> {
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
