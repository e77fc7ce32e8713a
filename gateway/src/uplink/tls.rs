//! rustls client configuration (ring provider) from PEM files, and the classification of
//! connection failures so a certificate that fails verification is named as such.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::TlsFiles;
use super::delivery::RetryReason;

/// Problems with the TLS material on disk.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {reason}")]
    File {
        /// ca_file, client_cert or client_key.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the material.
    #[error("tls setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds a client config verifying servers against `files.ca_file` (or the web PKI roots),
/// presenting a client certificate when one is configured.
///
/// # Errors
/// [`TlsSetupError`] naming the file at fault.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match &files.ca_file {
        Some(p) => {
            let bad = |reason: String| TlsSetupError::File {
                what: "ca_file",
                path: p.display().to_string(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| TlsSetupError::File {
                    what: "client_cert",
                    path: cert.display().to_string(),
                    reason: e.to_string(),
                })?;
            // Refused at check-config too; checked again because the file may have changed.
            crate::secrets::check_private_file(key).map_err(|reason| TlsSetupError::File {
                what: "client_key",
                path: key.display().to_string(),
                reason,
            })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsSetupError::File {
                what: "client_key",
                path: key.display().to_string(),
                reason: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs, key)?
        }
    };
    Ok(Arc::new(config))
}

/// Finds a rustls error anywhere in `e`'s source chain (tokio-rustls wraps it in
/// `io::Error`) and classifies it.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> Option<(RetryReason, String)> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(rustls_reason(r));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(rustls_reason(r));
        }
        cur = err.source();
    }
    None
}

fn rustls_reason(r: &rustls::Error) -> (RetryReason, String) {
    match r {
        rustls::Error::InvalidCertificate(c) => {
            use rustls::CertificateError as C;
            let hint = match c {
                C::Expired | C::ExpiredContext { .. } => "it has expired",
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "it is not valid yet (check this gateway's clock)"
                }
                C::UnknownIssuer => "its issuer is not in ca_file",
                _ => "check ca_file and the server's certificate",
            };
            (
                RetryReason::Certificate,
                format!("server certificate failed verification: {hint} ({c:?})"),
            )
        }
        other => (RetryReason::Tls, format!("tls: {other}")),
    }
}
