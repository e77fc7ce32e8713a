//! Who may play on a zone: fire evacuation > lockdown > manual announcement > scheduled bell.
//!
//! [`ZoneQueue`] is the pure arbiter of one zone (no I/O, no clock): the player asks it what
//! to play when a `broadcast.play` arrives, when a program ends and when a `broadcast.stop`
//! arrives, and carries out its [`Decision`]s. Rules:
//! - a request of higher or equal priority than what plays takes the zone at once (equal:
//!   the newer request replaces the older one, which ends);
//! - the program it displaced is kept to resume (from the start of its cycle) if its
//!   `on_preempted` is `resume`, otherwise it ends;
//! - a request of lower priority than what plays is refused (a bell during a fire evacuation
//!   never sounds), not queued;
//! - when the playing program ends or is stopped, the highest suspended one resumes.

use serde::{Deserialize, Serialize};

/// A program's priority on a zone, lowest first (so `Ord` compares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// The scheduled school bell.
    Bell,
    /// An operator's announcement.
    Manual,
    /// Lockdown (intruder) messages.
    Lockdown,
    /// Fire evacuation (GB 50116-2013 §4.8: a shared PA must force-switch to it).
    Fire,
}

impl Priority {
    /// The snake_case name, as in config and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Bell => "bell",
            Priority::Manual => "manual",
            Priority::Lockdown => "lockdown",
            Priority::Fire => "fire",
        }
    }
}

/// What happens to a program another one preempted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnPreempted {
    /// Play it again from the start of its cycle once the zone is free.
    #[default]
    Resume,
    /// It ends.
    End,
}

/// One request to play on a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The command that asked for it (echoed in events).
    pub command: uuid::Uuid,
    /// The message's name in the library.
    pub message: String,
    /// Its priority.
    pub priority: Priority,
    /// What happens when it is preempted.
    pub on_preempted: OnPreempted,
    /// Cycles to play; `None` repeats until stopped.
    pub cycles: Option<u32>,
}

/// What the player must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Play `start`; `displaced` was playing and now waits (`suspended`) or ended.
    Play {
        /// The program to start now.
        start: Entry,
        /// What it took the zone from.
        displaced: Option<(Entry, Fate)>,
    },
    /// Refused: a program of higher priority plays.
    Refused {
        /// What plays.
        playing: Priority,
    },
    /// Nothing plays any more: hang up.
    Idle,
}

/// What became of a displaced program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Kept; it resumes later.
    Suspended,
    /// Ended.
    Ended,
}

/// The arbiter of one zone.
#[derive(Debug, Default)]
pub struct ZoneQueue {
    current: Option<Entry>,
    suspended: Vec<Entry>,
}

impl ZoneQueue {
    /// What plays now.
    pub fn current(&self) -> Option<&Entry> {
        self.current.as_ref()
    }

    /// Programs waiting to resume, lowest priority first.
    pub fn suspended(&self) -> &[Entry] {
        &self.suspended
    }

    /// A new request.
    pub fn play(&mut self, e: Entry) -> Decision {
        let displaced = match self.current.take() {
            Some(cur) if cur.priority > e.priority => {
                let playing = cur.priority;
                self.current = Some(cur);
                return Decision::Refused { playing };
            }
            Some(cur) if cur.priority == e.priority || cur.on_preempted == OnPreempted::End => {
                Some((cur, Fate::Ended))
            }
            Some(cur) => {
                self.suspend(cur.clone());
                Some((cur, Fate::Suspended))
            }
            None => None,
        };
        // A newer request of the same priority replaces a suspended one too.
        self.suspended.retain(|s| s.priority != e.priority);
        self.current = Some(e.clone());
        Decision::Play {
            start: e,
            displaced,
        }
    }

    fn suspend(&mut self, e: Entry) {
        self.suspended.retain(|s| s.priority != e.priority);
        self.suspended.push(e);
        self.suspended.sort_by_key(|s| s.priority);
    }

    /// The playing program ended by itself (its cycles are done).
    pub fn finished(&mut self) -> Decision {
        self.current = None;
        self.resume()
    }

    fn resume(&mut self) -> Decision {
        match self.suspended.pop() {
            Some(next) => {
                self.current = Some(next.clone());
                Decision::Play {
                    start: next,
                    displaced: None,
                }
            }
            None => Decision::Idle,
        }
    }

    /// Stops programs named `message` (all of them if `None`). Returns what was stopped and
    /// what to do next; `None` if what plays is unchanged.
    pub fn stop(&mut self, message: Option<&str>) -> (Vec<Entry>, Option<Decision>) {
        let hit = |e: &Entry| message.is_none_or(|m| e.message == m);
        let mut stopped: Vec<Entry> = self.suspended.iter().filter(|e| hit(e)).cloned().collect();
        self.suspended.retain(|e| !hit(e));
        match self.current.take() {
            Some(cur) if hit(&cur) => {
                stopped.push(cur);
                (stopped, Some(self.resume()))
            }
            other => {
                self.current = other;
                (stopped, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(message: &str, priority: Priority, on_preempted: OnPreempted) -> Entry {
        Entry {
            command: uuid::Uuid::nil(),
            message: message.into(),
            priority,
            on_preempted,
            cycles: None,
        }
    }

    #[test]
    fn a_fire_evacuation_preempts_the_bell_which_resumes_after_it() {
        let mut q = ZoneQueue::default();
        let bell = e("bell", Priority::Bell, OnPreempted::Resume);
        assert!(matches!(
            q.play(bell.clone()),
            Decision::Play {
                displaced: None,
                ..
            }
        ));
        let fire = e("evacuation", Priority::Fire, OnPreempted::Resume);
        assert_eq!(
            q.play(fire.clone()),
            Decision::Play {
                start: fire,
                displaced: Some((bell.clone(), Fate::Suspended))
            }
        );
        assert_eq!(
            q.finished(),
            Decision::Play {
                start: bell,
                displaced: None
            }
        );
        assert_eq!(q.finished(), Decision::Idle);
    }

    #[test]
    fn a_lower_priority_is_refused_while_a_higher_one_plays() {
        let mut q = ZoneQueue::default();
        q.play(e("lockdown", Priority::Lockdown, OnPreempted::Resume));
        for p in [Priority::Bell, Priority::Manual] {
            assert_eq!(
                q.play(e("x", p, OnPreempted::Resume)),
                Decision::Refused {
                    playing: Priority::Lockdown
                }
            );
        }
        assert_eq!(q.current().map(|c| c.message.as_str()), Some("lockdown"));
    }

    #[test]
    fn a_program_configured_to_end_is_not_resumed() {
        let mut q = ZoneQueue::default();
        let manual = e("notice", Priority::Manual, OnPreempted::End);
        q.play(manual.clone());
        let d = q.play(e("evacuation", Priority::Fire, OnPreempted::Resume));
        assert!(matches!(
            d,
            Decision::Play {
                displaced: Some((_, Fate::Ended)),
                ..
            }
        ));
        assert!(q.suspended().is_empty());
        assert_eq!(q.finished(), Decision::Idle);
    }

    #[test]
    fn stopping_the_playing_program_resumes_the_highest_suspended_one() {
        let mut q = ZoneQueue::default();
        q.play(e("bell", Priority::Bell, OnPreempted::Resume));
        q.play(e("notice", Priority::Manual, OnPreempted::Resume));
        q.play(e("evacuation", Priority::Fire, OnPreempted::Resume));
        let (stopped, next) = q.stop(Some("evacuation"));
        assert_eq!(stopped.len(), 1);
        assert!(matches!(next, Some(Decision::Play { start, .. }) if start.message == "notice"));
        let (stopped, next) = q.stop(Some("bell"));
        assert_eq!((stopped.len(), next), (1, None));
        let (stopped, next) = q.stop(None);
        assert_eq!((stopped.len(), next), (1, Some(Decision::Idle)));
    }
}
