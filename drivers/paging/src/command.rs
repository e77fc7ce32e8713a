//! The arguments of `broadcast.play` and `broadcast.stop`.
//!
//! `broadcast.play`:
//! | arg | type | default | meaning |
//! |---|---|---|---|
//! | `message` | string | — | a message of the library (`evacuation`, `lockdown`, `bell`, configured ones) |
//! | `zones` | list of strings | the addressed zone, or every zone if the driver's own device is addressed | zone device ids |
//! | `repeat` | bool or integer | `false` | `true`: until stopped; `n`: n cycles; `false`: once |
//! | `priority` | `fire` \| `lockdown` \| `manual` \| `bell` | the message's | override |
//!
//! The default rule pack sends `{message = "evacuation", repeat = true}` to
//! `building:{building}`: every zone there plays the evacuation cycle until stopped.
//! `broadcast.stop {message?}` stops that message (everything if absent) on the addressed
//! zones; what it had preempted resumes.

use serde::Deserialize;

use crate::priority::Priority;

/// `broadcast.play` arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlayArgs {
    /// The message name.
    pub message: String,
    /// Zones (device ids), when the driver's own device is addressed.
    #[serde(default)]
    pub zones: Option<Vec<String>>,
    /// How often.
    #[serde(default)]
    pub repeat: Repeat,
    /// Priority override.
    #[serde(default)]
    pub priority: Option<Priority>,
}

/// `repeat`: a flag or a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Repeat {
    /// `true` = until stopped, `false` = once.
    Flag(bool),
    /// This many cycles.
    Times(u32),
}

impl Default for Repeat {
    fn default() -> Self {
        Repeat::Flag(false)
    }
}

impl Repeat {
    /// Cycles to play; `None` = until stopped.
    pub fn cycles(self) -> Option<u32> {
        match self {
            Repeat::Flag(true) => None,
            Repeat::Flag(false) => Some(1),
            Repeat::Times(n) => Some(n.max(1)),
        }
    }
}

/// `broadcast.stop` arguments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    /// Only this message; all if absent.
    #[serde(default)]
    pub message: Option<String>,
    /// Zones, when the driver's own device is addressed.
    #[serde(default)]
    pub zones: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_packs_evacuation_arguments_mean_until_stopped() {
        let a: PlayArgs =
            serde_json::from_value(serde_json::json!({"message": "evacuation", "repeat": true}))
                .unwrap();
        assert_eq!(
            (a.message.as_str(), a.repeat.cycles()),
            ("evacuation", None)
        );
        let a: PlayArgs = serde_json::from_value(
            serde_json::json!({"message": "bell", "repeat": 3, "priority": "manual"}),
        )
        .unwrap();
        assert_eq!(
            (a.repeat.cycles(), a.priority),
            (Some(3), Some(Priority::Manual))
        );
        assert!(serde_json::from_value::<PlayArgs>(serde_json::json!({"msg": "x"})).is_err());
    }
}
