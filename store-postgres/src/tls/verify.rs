//! Checking the server's certificate as its `sslmode` says, and naming the mode when the
//! certificate is refused.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use super::SslMode;

/// How much of the certificate is checked.
#[derive(Debug)]
pub(super) enum Check {
    /// Any certificate (`prefer`, `require`): the connection is encrypted, but the server may be
    /// anyone.
    AnyCertificate,
    /// The chain up to a trusted root, whatever host it names (`verify-ca`).
    Chain(Arc<WebPkiServerVerifier>),
    /// The chain, and the host name (`verify-full`).
    ChainAndName(Arc<WebPkiServerVerifier>),
}

/// The store's certificate verifier. Whatever it accepts, the server must still prove it holds
/// the certificate's key: handshake signatures are always checked.
#[derive(Debug)]
pub(super) struct ServerCertificates {
    mode: SslMode,
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertificates {
    pub(super) fn new(mode: SslMode, check: Check, provider: &CryptoProvider) -> Self {
        Self {
            mode,
            check,
            algorithms: provider.signature_verification_algorithms,
        }
    }

    fn refused(&self, cause: CertificateError) -> Error {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            CertificateRefused {
                mode: self.mode,
                cause,
            },
        ))))
    }
}

impl ServerCertVerifier for ServerCertificates {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let (chain, check_name) = match &self.check {
            Check::AnyCertificate => return Ok(ServerCertVerified::assertion()),
            Check::Chain(chain) => (chain, false),
            Check::ChainAndName(chain) => (chain, true),
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(verified) => Ok(verified),
            // The name is checked last, once the chain has been verified: a wrong name alone
            // means the chain is good.
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !check_name => Ok(ServerCertVerified::assertion()),
            Err(Error::InvalidCertificate(cause)) => Err(self.refused(cause)),
            Err(other) => Err(other),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The server's certificate failed the check its `sslmode` asks for. Retrying will not help:
/// the server will present the same certificate until someone changes it or the settings.
#[derive(Debug)]
pub(crate) struct CertificateRefused {
    mode: SslMode,
    cause: CertificateError,
}

impl fmt::Display for CertificateRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the server's TLS certificate is refused under sslmode={}: {}",
            self.mode, self.cause
        )?;
        match self.mode {
            SslMode::VerifyFull => f.write_str(
                " (verify-full needs a certificate signed by a trusted root that names the host \
                 connected to; check the host, or sslrootcert)",
            ),
            _ => f.write_str(
                " (it must be signed by a root in sslrootcert, or in the system's roots when \
                 sslrootcert is not given)",
            ),
        }
    }
}

impl std::error::Error for CertificateRefused {}
