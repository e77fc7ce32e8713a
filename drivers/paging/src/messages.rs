//! The message library: named programs, each a list of segments, with a priority.
//!
//! ```toml
//! [messages.evacuation]
//! priority = "fire"                 # fire | lockdown | manual | bell
//! on_preempted = "resume"           # resume | end
//! segments = ["/var/lib/campusgw/audio/evac_zh.wav", "{building}", "/var/lib/campusgw/audio/evac_en.wav"]
//! alternate_with_sounder = "10s"    # GB 50116-2013 §4.8 cycle: announcement 10-30 s, sounder 8-20 s
//! [building_clips]
//! A = "/var/lib/campusgw/audio/building_a_zh.wav"   # what "{building}" plays in building A
//! ```
//!
//! A segment is a WAV path, `{building}` (the clip of the zone's building, skipped if there
//! is none), `tone:evacuation` / `tone:lockdown` (synthesised stand-ins for speech), `bell`,
//! `sounder:DURATION` or `silence:DURATION`. Built in, and replaced by a configured message
//! of the same name: `evacuation` (fire, tone stand-in alternating with the sounder),
//! `lockdown` (lockdown, tone stand-in) and `bell` (bell, ends when preempted). Every
//! message is converted to G.711 when the driver is built, once per building that has zones.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use campusgw_sdk::{BuildError, ConfigIssue, FieldPath, HumanDuration};
use serde::Deserialize;

use crate::audio::{self, Program};
use crate::priority::{OnPreempted, Priority};

/// One `[messages.NAME]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageEntry {
    /// Its priority on a zone.
    pub priority: Priority,
    /// What happens when a higher priority takes the zone.
    #[serde(default)]
    pub on_preempted: OnPreempted,
    /// What it plays, in order.
    pub segments: Vec<String>,
    /// If set, the GB 50116-2013 §4.8 cycle: the segments as the announcement (10-30 s),
    /// then the sounder for this long (8-20 s).
    #[serde(default)]
    pub alternate_with_sounder: Option<HumanDuration>,
}

/// The messages that exist without configuration.
pub fn builtin() -> BTreeMap<String, MessageEntry> {
    let m = |priority, on_preempted, seg: &str, sounder: Option<u64>| MessageEntry {
        priority,
        on_preempted,
        segments: vec![seg.to_owned()],
        alternate_with_sounder: sounder.map(|s| HumanDuration(Duration::from_secs(s))),
    };
    BTreeMap::from([
        (
            "evacuation".to_owned(),
            m(
                Priority::Fire,
                OnPreempted::Resume,
                "tone:evacuation",
                Some(10),
            ),
        ),
        (
            "lockdown".to_owned(),
            m(
                Priority::Lockdown,
                OnPreempted::Resume,
                "tone:lockdown",
                None,
            ),
        ),
        (
            "bell".to_owned(),
            m(Priority::Bell, OnPreempted::End, "bell", None),
        ),
    ])
}

enum Segment<'a> {
    File(&'a str),
    Building,
    Pcm(Vec<i16>),
}

fn parse_segment(s: &str) -> Result<Segment<'_>, String> {
    let dur = |d: &str| d.parse::<HumanDuration>().map(|h| h.0);
    Ok(match s {
        "{building}" => Segment::Building,
        "bell" => Segment::Pcm(audio::bell()),
        "tone:evacuation" | "tone:lockdown" => Segment::Pcm(audio::tone_message(s)),
        _ => {
            if let Some(d) = s.strip_prefix("sounder:") {
                Segment::Pcm(audio::sounder(dur(d)?))
            } else if let Some(d) = s.strip_prefix("silence:") {
                Segment::Pcm(audio::silence(dur(d)?))
            } else if s.ends_with(".wav") || s.ends_with(".WAV") {
                Segment::File(s)
            } else {
                return Err(format!(
                    "unknown segment {s:?}: write a .wav path, \"{{building}}\", \"tone:evacuation\", \"tone:lockdown\", \"bell\", \"sounder:10s\" or \"silence:1s\""
                ));
            }
        }
    })
}

/// Checks `[messages]` and `[building_clips]` (pure: files are read at build).
pub fn validate(
    messages: &BTreeMap<String, MessageEntry>,
    clips: &BTreeMap<String, String>,
    at: &FieldPath,
) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for (name, m) in messages {
        let at = at.key("messages").key(name);
        if m.segments.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("segments"),
                "a message needs at least one segment",
            ));
        }
        for (i, s) in m.segments.iter().enumerate() {
            if let Err(e) = parse_segment(s) {
                issues.push(ConfigIssue::new(at.key("segments").index(i), e));
            }
        }
    }
    for (b, path) in clips {
        if !path.to_ascii_lowercase().ends_with(".wav") {
            issues.push(ConfigIssue::new(
                at.key("building_clips").key(b),
                format!("{path:?} is not a .wav file"),
            ));
        }
    }
    issues
}

/// Every message, converted to G.711 for every building that has zones.
#[derive(Debug, Clone)]
pub struct Library {
    entries: BTreeMap<String, MessageEntry>,
    programs: HashMap<(String, Option<String>), Program>,
}

fn read_wav(path: &str) -> Result<Vec<i16>, BuildError> {
    let bytes = std::fs::read(path).map_err(|source| BuildError::Io {
        what: format!("audio file {path}"),
        source,
    })?;
    crate::wav::read_8k_mono(&bytes).map_err(|e| BuildError::Invalid(format!("{path}: {e}")))
}

impl Library {
    /// Loads the built-in and configured messages for `buildings` (`None` = no building).
    ///
    /// # Errors
    /// [`BuildError`] when an audio file cannot be read or is not a WAV this reads.
    pub fn load(
        configured: &BTreeMap<String, MessageEntry>,
        clips: &BTreeMap<String, String>,
        buildings: &BTreeSet<Option<String>>,
    ) -> Result<Library, BuildError> {
        let mut entries = builtin();
        entries.extend(configured.clone());
        let mut files: HashMap<String, Vec<i16>> = HashMap::new();
        let mut programs = HashMap::new();
        for (name, m) in &entries {
            for b in buildings {
                let mut pcm = Vec::new();
                for s in &m.segments {
                    match parse_segment(s).map_err(BuildError::Invalid)? {
                        Segment::Pcm(p) => pcm.extend(p),
                        Segment::File(f) => {
                            if !files.contains_key(f) {
                                files.insert(f.to_owned(), read_wav(f)?);
                            }
                            pcm.extend_from_slice(&files[f]);
                        }
                        Segment::Building => {
                            if let Some(path) = b.as_ref().and_then(|b| clips.get(b)) {
                                pcm.extend(read_wav(path)?);
                            }
                        }
                    }
                }
                if let Some(s) = m.alternate_with_sounder {
                    pcm = audio::alternating(&pcm, s.0);
                }
                programs.insert((name.clone(), b.clone()), Program::from_pcm(&pcm));
            }
        }
        Ok(Library { entries, programs })
    }

    /// A message's entry.
    pub fn entry(&self, name: &str) -> Option<&MessageEntry> {
        self.entries.get(name)
    }

    /// A message's program for a building.
    pub fn program(&self, name: &str, building: Option<&str>) -> Option<&Program> {
        self.programs
            .get(&(name.to_owned(), building.map(str::to_owned)))
    }

    /// The names of every message.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_building_message_is_composed_of_its_segments_and_the_buildings_clip() {
        let dir = tempfile::tempdir().unwrap();
        let clip = |name: &str, secs: u64| {
            let p = dir.path().join(name);
            let pcm = audio::tone(500.0, Duration::from_secs(secs), 1000.0);
            std::fs::write(&p, crate::wav::write_8k_mono(&pcm)).unwrap();
            p.to_str().unwrap().to_owned()
        };
        let intro = clip("intro.wav", 1);
        let a = clip("a.wav", 2);
        let configured = BTreeMap::from([(
            "evac".to_owned(),
            MessageEntry {
                priority: Priority::Fire,
                on_preempted: OnPreempted::Resume,
                segments: vec![intro, "{building}".into(), "silence:1s".into()],
                alternate_with_sounder: None,
            },
        )]);
        let clips = BTreeMap::from([("A".to_owned(), a)]);
        assert!(validate(&configured, &clips, &FieldPath::root()).is_empty());
        let buildings = BTreeSet::from([Some("A".to_owned()), Some("B".to_owned())]);
        let lib = Library::load(&configured, &clips, &buildings).unwrap();
        // 1 s intro + 2 s building A + 1 s silence; building B has no clip
        assert_eq!(lib.program("evac", Some("A")).unwrap().frames(), 200);
        assert_eq!(lib.program("evac", Some("B")).unwrap().frames(), 100);
        // the built-in evacuation is the GB 50116 cycle: >= 10 s announcement + 10 s sounder
        assert!(
            lib.program("evacuation", Some("A")).unwrap().duration() >= Duration::from_secs(20)
        );
        assert_eq!(lib.entry("bell").unwrap().on_preempted, OnPreempted::End);
    }

    #[test]
    fn unknown_segments_are_reported_with_their_path() {
        let configured = BTreeMap::from([(
            "x".to_owned(),
            MessageEntry {
                priority: Priority::Manual,
                on_preempted: OnPreempted::End,
                segments: vec!["beep".into(), "silence:forever".into()],
                alternate_with_sounder: None,
            },
        )]);
        let issues = validate(&configured, &BTreeMap::new(), &FieldPath::root());
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].path.to_string(), "messages.x.segments[0]");
    }
}
