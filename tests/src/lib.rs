//! Helpers for the end-to-end tests in `tests/tests/`: they run the real `campusgw` binary
//! against device simulators and real peers.
//!
//! Cargo sets `CARGO_BIN_EXE_campusgw` only for the gateway package's own tests, so this
//! crate finds the binary itself: [`campusgw_bin`] looks next to the running test
//! executable (`target/<profile>/deps/NAME-HASH` → `target/<profile>/campusgw`). When that
//! binary is missing, or older than a source file or manifest of the crates it is built
//! from (say, after `cargo test -p campusgw-e2e` alone), it runs
//! `cargo build -p campusgw --bin campusgw` for that profile first, once per test process.
//! The check is by modification time rather than by always asking cargo, because
//! `cargo test --workspace` builds the binary with the workspace's dev features unified
//! and a plain `cargo build -p campusgw` would rebuild it without them.
//! `CAMPUSGW_BIN` overrides the lookup (an installed or release binary); then nothing is
//! built.

pub mod gateway;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::SystemTime;

/// The `campusgw` binary the end-to-end tests run, built for the test's own profile.
///
/// # Panics
/// When the test executable's location cannot be read, or `cargo build` fails: the tests
/// cannot run without the binary, and the panic says why.
pub fn campusgw_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CAMPUSGW_BIN") {
            return PathBuf::from(bin);
        }
        let exe = std::env::current_exe().expect("the test executable's path");
        // target/<profile>/deps/<test>-<hash>: the profile directory is two levels up.
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps");
        let bin = profile_dir.join("campusgw");
        if !is_fresh(&bin) {
            build(profile_dir);
        }
        bin
    })
    .clone()
}

/// Runs `cargo build -p campusgw --bin campusgw` into the target directory that holds
/// `profile_dir`, for the profile it is named after.
fn build(profile_dir: &Path) {
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        // `cargo test` builds the dev and test profiles into `debug/`.
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let target_dir = profile_dir.parent().expect("target/<profile>");
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let status = Command::new(cargo)
        .args([
            "build", "--locked", "--quiet", "-p", "campusgw", "--bin", "campusgw",
        ])
        .args(["--profile", profile, "--manifest-path", workspace])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cargo} to build campusgw: {e}"));
    assert!(
        status.success(),
        "`cargo build -p campusgw --bin campusgw` failed: {status}"
    );
}

/// Whether `bin` exists and is newer than every `src/` file, `build.rs` and `Cargo.toml`
/// of the gateway, the drivers and the rules, and than `Cargo.lock`.
fn is_fresh(bin: &Path) -> bool {
    let Some(built) = modified(bin) else {
        return false;
    };
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut newest = modified(&root.join("Cargo.lock"));
    for dir in ["gateway", "drivers", "rules"] {
        newest = newest.max(newest_source(&root.join(dir), false));
    }
    newest.is_none_or(|n| n <= built)
}

/// The newest modification time of the source files under `dir` (`in_src`: inside `src/`).
fn newest_source(dir: &Path, in_src: bool) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            newest = newest.max(newest_source(&path, in_src || name == "src"));
        } else if in_src || name == "Cargo.toml" || name == "build.rs" {
            newest = newest.max(modified(&path));
        }
    }
    newest
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
