//! Test kit for the tests that run the `campusgw` binary: the command with a quiet log, a
//! file written into a temp dir, and `journal export` read back.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The binary under test, logging warnings only.
pub fn campusgw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_campusgw"));
    c.env("CAMPUSGW_LOG", "warn");
    c
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `campusgw journal export --data-dir data`, which must succeed: its stdout.
pub fn export_text(data: &Path) -> String {
    let out = campusgw()
        .args(["journal", "export", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
