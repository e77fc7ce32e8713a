//! Config helpers the receiver (`config.rs`) and the transmitter (`transmit/config.rs`)
//! share, so both read keys and addresses the same way and say the same thing when they
//! are wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use campusgw_sdk::{ConfigIssue, FieldPath};

use crate::crypto::{Key, KeyEncoding};

/// Where an AES key comes from: `key` (the string itself) or `key_file` (its first line),
/// written as `key_encoding` says.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeySource<'a> {
    pub key: Option<&'a str>,
    pub key_file: Option<&'a Path>,
    pub encoding: KeyEncoding,
}

/// Why a configured key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KeyLoadError {
    /// The key file could not be read.
    #[error("cannot read key_file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key (or the file's first line) is not a key.
    #[error("{0}")]
    Key(crate::Dc09Error),
}

impl KeySource<'_> {
    /// Pure checks: not both `key` and `key_file`, a `key` that parses, a non-empty path.
    pub fn issues(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        match (self.key, self.key_file) {
            (Some(_), Some(_)) => vec![ConfigIssue::new(
                at.key("key_file"),
                "give either key or key_file, not both",
            )],
            (Some(k), None) => match Key::parse(k, self.encoding) {
                Ok(_) => Vec::new(),
                Err(e) => vec![ConfigIssue::new(
                    at.key("key"),
                    format!("{e}; set key_encoding = \"hex\" for a hex key"),
                )],
            },
            (None, Some(p)) if p.as_os_str().is_empty() => vec![ConfigIssue::new(
                at.key("key_file"),
                "is empty; give a path",
            )],
            _ => Vec::new(),
        }
    }

    /// The key, reading `key_file` when that is how it is given; `None` when neither is.
    ///
    /// # Errors
    /// [`KeyLoadError`] when the file cannot be read or its first line is not a key.
    pub fn load(&self) -> Result<Option<Key>, KeyLoadError> {
        let text = match (self.key, self.key_file) {
            (Some(k), _) => k.to_owned(),
            (None, Some(path)) => {
                let raw = std::fs::read_to_string(path).map_err(|source| KeyLoadError::Io {
                    path: path.to_owned(),
                    source,
                })?;
                raw.lines().next().unwrap_or_default().trim().to_owned()
            }
            (None, None) => return Ok(None),
        };
        Key::parse(&text, self.encoding)
            .map(Some)
            .map_err(KeyLoadError::Key)
    }
}

/// A listen address: `ip:port` with a numeric ip; `None` when not given.
///
/// # Errors
/// What is wrong and an example of what to write.
pub(crate) fn parse_listen_addr(s: Option<&str>) -> Result<Option<SocketAddr>, String> {
    match s {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            format!("{s:?} is not host:port with a numeric ip, like \"0.0.0.0:9010\"")
        }),
    }
}
