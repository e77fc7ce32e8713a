//! The console's certificate: the configured files, or a self-signed one generated at
//! first start (rcgen) and kept in `data_dir/console-tls/` (key mode 0600), so a console
//! on a LAN address is HTTPS from its first start. Plain HTTP is served only on loopback
//! (checked by the config).

use std::path::{Path, PathBuf};

/// Why no certificate could be made.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// rcgen failed.
    #[error("cannot generate the console certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The files could not be written.
    #[error("cannot write the console certificate to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The self-signed certificate and key files under `data_dir`, generated on first use
/// for `names` (host names or addresses the console is reached by).
///
/// # Errors
/// [`SelfSignedError`].
pub fn self_signed(
    data_dir: &Path,
    names: &[String],
) -> Result<(PathBuf, PathBuf), SelfSignedError> {
    let dir = data_dir.join("console-tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SelfSignedError::Write { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    super::auth::write_private(&key, &certified.key_pair.serialize_pem())
        .map_err(write_err(&key))?;
    std::fs::write(&cert, certified.cert.pem()).map_err(write_err(&cert))?;
    tracing::warn!(cert = %cert.display(), "console: no TLS certificate configured; generated a self-signed one (browsers will ask to trust it; configure tls_cert_file / tls_key_file for a real one)");
    Ok((cert, key))
}
