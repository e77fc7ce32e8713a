//! Writing an applied import: the whole merged configuration replaces the file, atomically.
//!
//! # Why the whole file, not an include
//! The config has no include mechanism, and a detector or door import *replaces* lists
//! inside device tables that the operator's file defines (`[[uitd.components]]` of a UITD,
//! `doors` of a controller); an include file would need merge rules for arrays of tables
//! that TOML itself does not have. So the validated merged document is written in place:
//!
//! 1. the current file is copied to `<file>.before-import-<unix seconds>` and fsynced
//!    (the backup: `cp` it back to undo);
//! 2. the merged text goes to a temporary file in the same directory with the original's
//!    permissions, fsynced;
//! 3. renamed over the config, and the directory fsynced.
//!
//! A crash at any point leaves either the old or the new file, never half of one.
//!
//! The rewritten file is the parsed document serialized again: values and tables are kept,
//! **comments and layout are not** (the backup keeps them). Nothing here reloads the
//! gateway: the caller says a restart is needed.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where an applied import went.
#[derive(Debug, Clone)]
pub struct Written {
    /// The config file (now the merged text).
    pub config: PathBuf,
    /// The copy of what it was before.
    pub backup: PathBuf,
}

/// Replaces `config` with `merged` (steps in the module doc), keeping `before` (the text
/// the preview was made from, checked by the caller) as the backup.
///
/// # Errors
/// Any I/O error; the config is then unchanged (a backup may be left behind).
pub fn replace_config(config: &Path, before: &[u8], merged: &str) -> std::io::Result<Written> {
    // A symlinked config (/etc/campusgw/gateway.toml -> ...) is replaced where it points,
    // not turned into a file beside a stale target.
    let real = std::fs::canonicalize(config)?;
    let config = real.as_path();
    let dir = match config.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = config
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "gateway.toml".into());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let perms = std::fs::metadata(config)?.permissions();
    let mut backup = dir.join(format!("{name}.before-import-{stamp}"));
    let mut n = 1;
    while backup.exists() {
        backup = dir.join(format!("{name}.before-import-{stamp}-{n}"));
        n += 1;
    }
    write_synced(&backup, before, &perms)?;
    let tmp = dir.join(format!(".{name}.import-{stamp}.tmp"));
    if let Err(e) = write_synced(&tmp, merged.as_bytes(), &perms) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, config) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(Written {
        config: config.to_owned(),
        backup,
    })
}

fn write_synced(path: &Path, bytes: &[u8], perms: &std::fs::Permissions) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.set_permissions(perms.clone())?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_config_is_replaced_and_the_old_text_kept_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, "# mine\na = 1\n").unwrap();
        let w = replace_config(&config, b"# mine\na = 1\n", "a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "a = 2\n");
        assert_eq!(
            std::fs::read_to_string(&w.backup).unwrap(),
            "# mine\na = 1\n"
        );
        // No temporary file is left behind; a second apply gets its own backup.
        let w2 = replace_config(&config, b"a = 2\n", "a = 3\n").unwrap();
        assert_ne!(w.backup, w2.backup);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn a_symlinked_config_is_replaced_where_it_points() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "a = 1\n").unwrap();
        let link = dir.path().join("gateway.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let w = replace_config(&link, b"a = 1\n", "a = 2\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "a = 2\n");
        assert_eq!(std::fs::read_to_string(&w.backup).unwrap(), "a = 1\n");
    }
}
