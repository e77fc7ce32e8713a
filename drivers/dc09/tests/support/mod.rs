//! Helpers the crate's integration tests share: finding the python with the pinned PyPI
//! peers (pysiaalarm, dc09_spt) that `scripts/test` installs.

use std::path::PathBuf;
use std::process::Command;

/// The python to run peers with: `$CAMPUSGW_PYTHON` (set by `scripts/test`), else the
/// project's `.venv/bin/python`, else `python3`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAMPUSGW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// [`python`], after checking it has `package` installed; panics saying how to get it (an
/// interop test must fail, not pass silently, without its peer).
pub fn python_with(package: &str) -> PathBuf {
    let python = python();
    let probe = Command::new(&python)
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version({package:?}))"),
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} is required for the {package} interop test: {e}",
                python.display()
            )
        });
    assert!(
        probe.status.success(),
        "{package} is not installed for {} (run `scripts/test`, which installs it into .venv/): {}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}
