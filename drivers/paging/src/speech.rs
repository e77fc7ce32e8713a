//! The shipped evacuation and lockdown messages, in Mandarin and English, spoken by
//! `espeak-ng` (Debian package `espeak-ng`) at test time and by `campusgw demo` at start-up;
//! nothing recorded is in the repository.
//!
//! [`shipped`] writes WAV files into a directory and returns the `[messages]` and
//! `[building_clips]` tables that use them: `evacuation` is the GB 50116-2013 §4.8 cycle of
//! (building name, Mandarin text, English text) alternating with the sounder; `lockdown` is
//! (building name, Mandarin, English) repeated. The building's clip says its name in both
//! languages ("A号楼。Building A."), which is how `{building}` composes a message per building.
//! When `espeak-ng` is not installed the same tables are returned with the synthesised tone
//! stand-ins (`tone:evacuation`, `tone:lockdown`) and [`Voice::Tones`] says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use campusgw_sdk::HumanDuration;

use crate::messages::MessageEntry;
use crate::priority::{OnPreempted, Priority};

/// The Mandarin evacuation text.
pub const EVACUATION_ZH: &str =
    "请注意，本楼发生火灾。请保持冷静，听从老师指挥，从最近的安全出口有序疏散，不要乘坐电梯。";
/// The English evacuation text.
pub const EVACUATION_EN: &str = "Attention please. There is a fire in this building. Stay calm, follow your teacher, and leave by the nearest exit. Do not use the lifts.";
/// The Mandarin lockdown text.
pub const LOCKDOWN_ZH: &str = "紧急情况，请立即锁好门窗，远离门窗，保持安静，等待进一步通知。";
/// The English lockdown text.
pub const LOCKDOWN_EN: &str = "Emergency lockdown. Lock the doors, stay away from doors and windows, keep quiet, and wait for further instructions.";

/// Who spoke the shipped messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Voice {
    /// espeak-ng (voices `cmn` and `en`).
    Espeak,
    /// espeak-ng is absent: synthesised tone programs instead of speech.
    Tones,
}

/// Why the messages could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SpeechError {
    /// espeak-ng ran and failed.
    #[error("espeak-ng failed for {what}: {detail}")]
    Espeak {
        /// Which clip.
        what: String,
        /// Its stderr or exit status.
        detail: String,
    },
}

fn espeak_available() -> bool {
    Command::new("espeak-ng")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn speak(voice: &str, text: &str, out: &Path) -> Result<String, SpeechError> {
    let what = out.display().to_string();
    let o = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(out)
        .arg(text)
        .output()
        .map_err(|e| SpeechError::Espeak {
            what: what.clone(),
            detail: e.to_string(),
        })?;
    if !o.status.success() {
        return Err(SpeechError::Espeak {
            what,
            detail: String::from_utf8_lossy(&o.stderr).into_owned(),
        });
    }
    Ok(what)
}

/// The shipped library: `[messages]`, `[building_clips]`, and who spoke them.
#[derive(Debug, Clone)]
pub struct Shipped {
    /// The `evacuation` and `lockdown` entries.
    pub messages: BTreeMap<String, MessageEntry>,
    /// Building id → WAV naming it.
    pub clips: BTreeMap<String, String>,
    /// espeak-ng or the tone stand-ins.
    pub voice: Voice,
}

/// The shipped messages for `buildings`, written into `dir` (which must exist).
///
/// # Errors
/// [`SpeechError`] when espeak-ng is installed but fails.
pub fn shipped(dir: &Path, buildings: &[&str]) -> Result<Shipped, SpeechError> {
    let voice = if espeak_available() {
        Voice::Espeak
    } else {
        Voice::Tones
    };
    let mut clips = BTreeMap::new();
    let (evac, lock) = match voice {
        Voice::Tones => (
            vec!["tone:evacuation".to_owned()],
            vec!["tone:lockdown".to_owned()],
        ),
        Voice::Espeak => {
            for b in buildings {
                let text = format!("{b}号楼。 Building {b}.");
                let path = speak("cmn", &text, &dir.join(format!("building_{b}.wav")))?;
                clips.insert((*b).to_owned(), path);
            }
            let clip = |voice: &str, text: &str, name: &str| speak(voice, text, &dir.join(name));
            (
                vec![
                    "{building}".to_owned(),
                    clip("cmn", EVACUATION_ZH, "evacuation_zh.wav")?,
                    "silence:500ms".to_owned(),
                    clip("en", EVACUATION_EN, "evacuation_en.wav")?,
                ],
                vec![
                    "{building}".to_owned(),
                    clip("cmn", LOCKDOWN_ZH, "lockdown_zh.wav")?,
                    "silence:500ms".to_owned(),
                    clip("en", LOCKDOWN_EN, "lockdown_en.wav")?,
                    "silence:2s".to_owned(),
                ],
            )
        }
    };
    let messages = BTreeMap::from([
        (
            "evacuation".to_owned(),
            MessageEntry {
                priority: Priority::Fire,
                on_preempted: OnPreempted::Resume,
                segments: evac,
                alternate_with_sounder: Some(HumanDuration(Duration::from_secs(10))),
            },
        ),
        (
            "lockdown".to_owned(),
            MessageEntry {
                priority: Priority::Lockdown,
                on_preempted: OnPreempted::Resume,
                segments: lock,
                alternate_with_sounder: None,
            },
        ),
    ]);
    Ok(Shipped {
        messages,
        clips,
        voice,
    })
}
