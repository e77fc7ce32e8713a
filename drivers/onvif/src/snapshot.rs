//! Snapshot storage: a JPEG check, a content-addressed file name, and size / age limits.
//!
//! Files are `<camera>-<UTC time>-<first 12 hex of SHA-256>.jpg` in one directory, written
//! to a temporary name and renamed, so a reader never sees half a file. After each store
//! the directory is pruned: files older than `max_age` go, then the oldest (by name time,
//! which sorts by time within a camera, and by modification time across cameras) until the
//! total is within `max_total_bytes`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// JPEG (ITU-T T.81 Annex B): SOI marker then the first marker segment.
const SOI: [u8; 3] = [0xFF, 0xD8, 0xFF];
/// JPEG EOI marker: a body without it is truncated.
const EOI: [u8; 2] = [0xFF, 0xD9];

/// Why a snapshot was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The body does not start like a JPEG.
    #[error("not a jpeg (the body does not start with FF D8 FF)")]
    NotJpeg,
    /// The body does not end with EOI.
    #[error("truncated jpeg ({0} bytes, no end-of-image marker)")]
    Truncated(usize),
    /// Writing failed.
    #[error("cannot store the snapshot in {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Checks that `body` is a whole JPEG.
///
/// # Errors
/// [`SnapshotError::NotJpeg`] or [`SnapshotError::Truncated`].
pub fn check_jpeg(body: &[u8]) -> Result<(), SnapshotError> {
    if !body.starts_with(&SOI) {
        return Err(SnapshotError::NotJpeg);
    }
    // Some encoders pad after EOI; accept a few trailing bytes.
    let tail = &body[body.len().saturating_sub(16)..];
    if !tail.windows(2).any(|w| w == EOI) {
        return Err(SnapshotError::Truncated(body.len()));
    }
    Ok(())
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// File name inside the directory.
    pub file: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Storage limits.
#[derive(Debug, Clone)]
pub struct Store {
    /// Directory.
    pub dir: PathBuf,
    /// Total bytes kept.
    pub max_total_bytes: u64,
    /// Age limit.
    pub max_age: Duration,
}

impl Store {
    /// Stores a checked JPEG from `camera` taken at `at`, then prunes.
    ///
    /// # Errors
    /// [`SnapshotError::Io`].
    pub fn put(
        &self,
        camera: &str,
        at: DateTime<Utc>,
        jpeg: &[u8],
    ) -> Result<Stored, SnapshotError> {
        let io = |source| SnapshotError::Io {
            dir: self.dir.clone(),
            source,
        };
        let sha256: String = Sha256::digest(jpeg)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let file = format!(
            "{camera}-{}-{}.jpg",
            at.format("%Y%m%dT%H%M%S%.3fZ"),
            &sha256[..12]
        );
        let tmp = self.dir.join(format!(".{file}.part"));
        // The image is on disk (data and name) before the `video.snapshot` event that
        // refers to it is journaled, so a power cut never leaves an event without its file.
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(jpeg).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, self.dir.join(&file)).map_err(io)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
        self.prune().map_err(io)?;
        Ok(Stored {
            file,
            sha256,
            size: jpeg.len() as u64,
        })
    }

    /// Applies the age and size limits.
    ///
    /// # Errors
    /// I/O errors listing the directory (single deletions that fail are skipped).
    pub fn prune(&self) -> std::io::Result<()> {
        let now = SystemTime::now();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".jpg") || name.starts_with('.') {
                continue;
            }
            let meta = entry.metadata()?;
            let modified = meta.modified().unwrap_or(now);
            files.push((modified, name, meta.len(), entry.path()));
        }
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.2).sum();
        for (modified, _, len, path) in &files {
            let too_old = now.duration_since(*modified).unwrap_or_default() > self.max_age;
            if (too_old || total > self.max_total_bytes) && remove(path) {
                total = total.saturating_sub(*len);
            }
        }
        Ok(())
    }
}

fn remove(path: &Path) -> bool {
    std::fs::remove_file(path).is_ok()
}

/// A minimal valid baseline JPEG (8x8, one gray component), for the simulator and tests.
pub fn tiny_jpeg() -> Vec<u8> {
    // SOI, DQT (all ones), SOF0 8x8 1 component, DHT DC (one code: category 0) and AC (one
    // code: EOB), SOS, one block coded as DC diff 0 + EOB (two 1-bit codes, padded), EOI.
    let mut v = vec![0xFF, 0xD8];
    v.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    v.extend([1u8; 64]);
    v.extend([
        0xFF, 0xC0, 0x00, 0x0B, 0x08, 0x00, 0x08, 0x00, 0x08, 0x01, 0x01, 0x11, 0x00,
    ]);
    v.extend([0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01]);
    v.extend([0u8; 15]);
    v.push(0x00);
    v.extend([0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01]);
    v.extend([0u8; 15]);
    v.push(0x00);
    v.extend([0xFF, 0xDA, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x3F, 0x00]);
    v.push(0x3F);
    v.extend([0xFF, 0xD9]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_jpeg_passes_and_truncated_or_foreign_bodies_do_not() {
        let j = tiny_jpeg();
        check_jpeg(&j).expect("whole");
        assert!(matches!(
            check_jpeg(&j[..j.len() - 2]),
            Err(SnapshotError::Truncated(_))
        ));
        assert!(matches!(
            check_jpeg(b"<html>401</html>"),
            Err(SnapshotError::NotJpeg)
        ));
        assert!(matches!(check_jpeg(b""), Err(SnapshotError::NotJpeg)));
    }

    #[test]
    fn the_oldest_files_go_first_when_the_total_is_over_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = tiny_jpeg();
        let store = Store {
            dir: dir.path().to_owned(),
            max_total_bytes: (j.len() as u64 + 1) * 2,
            max_age: Duration::from_secs(3600),
        };
        let t0 = Utc::now();
        let mut names = Vec::new();
        for i in 0..3 {
            let mut body = j.clone();
            // different content, different names
            body.insert(3, 0xE0 + i);
            let at = t0 + chrono::TimeDelta::seconds(i.into());
            names.push(store.put("cam1", at, &body).expect("stored").file);
        }
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            !left.contains(&names[0]),
            "the oldest was deleted: {left:?}"
        );
    }
}
