//! Reading the rules directory (the engine does no file I/O) and fingerprinting it for
//! hot reload.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use campusgw_rules::{RuleEnv, RuleIssue, RuleSet, RuleSource};

/// Why a rule set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory or a file could not be read.
    #[error("cannot read rules {path}: {source}")]
    Io {
        /// What.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The files have problems (all of them, each with file and line).
    #[error("rule set has {} problem(s):\n{}", .0.len(), issues_text(.0))]
    Invalid(Vec<RuleIssue>),
}

fn issues_text(issues: &[RuleIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `*.toml` in `dir`, sorted by name.
///
/// # Errors
/// [`LoadError::Io`].
pub fn read_sources(dir: &Path) -> Result<Vec<RuleSource>, LoadError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| LoadError::Io { path, source }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).map_err(io(&file))?;
            Ok(RuleSource { file, text })
        })
        .collect()
}

/// Reads and checks the rule set in `dir`.
///
/// # Errors
/// [`LoadError`]: unreadable, or every problem found.
pub fn load_rule_set(dir: &Path, env: &RuleEnv) -> Result<RuleSet, LoadError> {
    let sources = read_sources(dir)?;
    RuleSet::parse(&sources, env).map_err(LoadError::Invalid)
}

/// What identifies the directory's contents cheaply: names, sizes and mtimes.
pub(super) fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    out.sort();
    out
}
