//! Configuration problems with their place in the file.
//!
//! Validation is pure and gathers every problem; each names the field path
//! (`device[2].registers[0].address`), and the gateway's config loader turns the path into
//! a file line.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A path into the config document: `device[3].listen`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    /// The document root.
    pub fn root() -> FieldPath {
        FieldPath::default()
    }

    /// This path extended by a table key.
    pub fn key(&self, k: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(k.to_owned()));
        p
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }

    /// Parses a serde path (`registers[0].address`, as `serde_path_to_error` prints it)
    /// relative to this path.
    pub fn join_dotted(&self, rel: &str) -> FieldPath {
        let mut p = self.clone();
        for part in rel.split('.').filter(|s| !s.is_empty() && *s != "?") {
            let (name, rest) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                p.0.push(Segment::Key(name.to_owned()));
            }
            for idx in rest.split('[') {
                if let Ok(i) = idx.trim_end_matches(']').parse() {
                    p.0.push(Segment::Index(i));
                }
            }
        }
        p
    }

    /// Walks the path: each step is `Ok(key)` or `Err(index)`.
    pub fn steps(&self) -> impl Iterator<Item = Result<&str, usize>> {
        self.0.iter().map(|s| match s {
            Segment::Key(k) => Ok(k.as_str()),
            Segment::Index(i) => Err(*i),
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, s) in self.0.iter().enumerate() {
            match s {
                Segment::Key(k) if n == 0 => f.write_str(k)?,
                Segment::Key(k) => write!(f, ".{k}")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where.
    pub path: FieldPath,
    /// What is wrong and what to change, lowercase, no period.
    pub message: String,
}

impl ConfigIssue {
    /// A problem at `path`.
    pub fn new(path: FieldPath, message: impl Into<String>) -> ConfigIssue {
        ConfigIssue {
            path,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A duration in the config, the same syntax everywhere in the file: text such as
/// `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"30d"` or `"1h 30m"` (humantime's grammar), or a bare
/// integer meaning seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(HumanDuration).map_err(|e| {
            format!("invalid duration {s:?} ({e}); write e.g. \"500ms\", \"30s\", \"5m\", \"2h\", \"30d\"")
        })
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// Suggests the closest known name to an unknown one, for "did you mean" hints.
pub fn suggest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_the_config_reads() {
        let p = FieldPath::root().key("device").index(2).key("listen");
        assert_eq!(p.to_string(), "device[2].listen");
        let q = FieldPath::root()
            .key("device")
            .index(0)
            .join_dotted("registers[3].scale");
        assert_eq!(q.to_string(), "device[0].registers[3].scale");
    }

    #[test]
    fn durations_share_one_grammar_and_accept_bare_seconds() {
        for (s, ms) in [
            ("500ms", 500),
            ("1s", 1000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("0s", 0),
            ("30d", 2_592_000_000),
            ("1h 30m", 5_400_000),
        ] {
            assert_eq!(
                s.parse::<HumanDuration>(),
                Ok(HumanDuration(Duration::from_millis(ms))),
                "{s}"
            );
        }
        for bad in ["", "1", "s", "-1s", "soon", "5 parsecs"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad:?} accepted");
        }
        #[derive(Deserialize)]
        struct T {
            a: HumanDuration,
            b: HumanDuration,
        }
        let t: T = serde_json::from_str(r#"{"a": 90, "b": "90s"}"#).unwrap();
        assert_eq!(
            (t.a, t.b),
            (
                HumanDuration(Duration::from_secs(90)),
                HumanDuration(Duration::from_secs(90))
            )
        );
    }

    #[test]
    fn suggestions_find_close_names_only() {
        assert_eq!(
            suggest("pa_sytem", ["pa_system", "gym_panel"]),
            Some("pa_system")
        );
        assert_eq!(suggest("zzz", ["pa_system"]), None);
    }
}
