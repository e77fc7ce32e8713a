//! Which events an uplink forwards (a class list and kind patterns), and which of them
//! are urgent: an urgent event pending wakes the uplink's retry loop and caps its back-off
//! low (`uplink/urgency.rs`, issue 22).

use std::time::Duration;

use campusgw_sdk::{Class, ConfigIssue, FieldPath, Kind};

/// The classes and kinds an uplink forwards. Events of a wanted class whose kind does not
/// match are skipped: their cursor moves past them as if confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    classes: Vec<Class>,
    kinds: Vec<KindPattern>,
    urgent: Urgent,
}

/// The urgency knobs of an uplink (`urgent_classes`, `urgent_backoff_max`,
/// `alarm_delay_threshold`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Urgent {
    classes: Vec<Class>,
    backoff_max: Duration,
    delay_threshold: Duration,
}

/// Default `urgent_backoff_max`.
pub const URGENT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default `alarm_delay_threshold`.
pub const ALARM_DELAY_THRESHOLD: Duration = Duration::from_secs(30);
/// The shortest `urgent_backoff_max` accepted (a floor against reconnect storms).
const URGENT_BACKOFF_FLOOR: Duration = Duration::from_millis(100);

impl Default for Urgent {
    fn default() -> Self {
        Urgent {
            classes: vec![Class::LifeSafety],
            backoff_max: URGENT_BACKOFF_MAX,
            delay_threshold: ALARM_DELAY_THRESHOLD,
        }
    }
}

/// The urgency keys of an `[[uplink]]` table, as written.
#[derive(Debug, Default)]
pub(crate) struct UrgentKeys {
    /// `urgent_classes`: `life_safety` and/or `security` (default `["life_safety"]`).
    pub classes: Option<Vec<Class>>,
    /// `urgent_backoff_max` (default 1 s).
    pub backoff_max: Option<Duration>,
    /// `alarm_delay_threshold` (default 30 s).
    pub delay_threshold: Option<Duration>,
}

/// `fire.alarm` (exact), `fire.*` (a family and its sub-kinds) or `*` (all).
#[derive(Debug, Clone, PartialEq, Eq)]
enum KindPattern {
    Exact(String),
    Prefix(String),
    Any,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            classes: Class::ALL.to_vec(),
            kinds: vec![KindPattern::Any],
            urgent: Urgent::default(),
        }
    }
}

impl Filter {
    /// Everything of `classes`, any kind.
    pub fn classes(classes: &[Class]) -> Filter {
        Filter {
            classes: classes.to_vec(),
            kinds: vec![KindPattern::Any],
            urgent: Urgent::default(),
        }
    }

    /// Applies the urgency keys, validated: `urgent_classes` may name only `life_safety`
    /// and `security`, each forwarded by this uplink; `urgent_backoff_max` between 100 ms
    /// and the kind's long back-off cap `long_cap`; `alarm_delay_threshold` at least 1 s.
    pub(crate) fn with_urgency(
        mut self,
        keys: UrgentKeys,
        long_cap: Duration,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Filter> {
        let before = issues.len();
        if let Some(classes) = keys.classes {
            for (i, c) in classes.iter().enumerate() {
                if !matches!(c, Class::LifeSafety | Class::Security) {
                    issues.push(ConfigIssue::new(
                        at.key("urgent_classes").index(i),
                        format!("{c} cannot be urgent (it would keep the uplink reconnecting every second while it waits): write \"life_safety\" and/or \"security\""),
                    ));
                } else if !self.wants_class(*c) {
                    issues.push(ConfigIssue::new(
                        at.key("urgent_classes").index(i),
                        format!("{c} is urgent but this uplink does not forward it: add it to classes or remove it here"),
                    ));
                }
            }
            self.urgent.classes = Class::ALL
                .into_iter()
                .filter(|x| classes.contains(x))
                .collect();
        }
        if let Some(d) = keys.backoff_max {
            if d < URGENT_BACKOFF_FLOOR || d > long_cap {
                issues.push(ConfigIssue::new(
                    at.key("urgent_backoff_max"),
                    format!("urgent_backoff_max must be between 100ms and the uplink's back-off cap ({}s); write e.g. \"1s\"", long_cap.as_secs()),
                ));
            }
            self.urgent.backoff_max = d;
        }
        if let Some(d) = keys.delay_threshold {
            if d < Duration::from_secs(1) {
                issues.push(ConfigIssue::new(
                    at.key("alarm_delay_threshold"),
                    "alarm_delay_threshold must be at least 1s; write e.g. \"30s\"",
                ));
            }
            self.urgent.delay_threshold = d;
        }
        (issues.len() == before).then_some(self)
    }

    /// The urgent classes this uplink forwards, highest first.
    pub fn urgent_classes(&self) -> Vec<Class> {
        self.urgent
            .classes
            .iter()
            .copied()
            .filter(|c| self.wants_class(*c))
            .collect()
    }

    /// Whether `class` is urgent for this uplink (and forwarded by it).
    pub fn is_urgent(&self, class: Class) -> bool {
        self.wants_class(class) && self.urgent.classes.contains(&class)
    }

    /// The back-off cap while an urgent event is pending.
    pub fn urgent_backoff_max(&self) -> Duration {
        self.urgent.backoff_max
    }

    /// The age past which an undelivered urgent event raises `uplink.alarm_delayed`.
    pub fn alarm_delay_threshold(&self) -> Duration {
        self.urgent.delay_threshold
    }

    /// Whether this uplink forwards `class` events of `kind`.
    pub fn accepts(&self, class: Class, kind: &Kind) -> bool {
        self.wants_class(class) && self.wants_kind(kind)
    }

    /// From the `classes` / `kinds` config keys (absent means all).
    pub(crate) fn parse(
        classes: Option<Vec<Class>>,
        kinds: Option<Vec<String>>,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Filter> {
        let mut f = Filter::default();
        if let Some(c) = classes {
            if c.is_empty() {
                issues.push(ConfigIssue::new(
                    at.key("classes"),
                    "classes must not be empty",
                ));
                return None;
            }
            f.classes = Class::ALL.into_iter().filter(|x| c.contains(x)).collect();
        }
        if let Some(k) = kinds {
            let mut ok = true;
            f.kinds = k
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let p = KindPattern::parse(s);
                    if p.is_none() {
                        ok = false;
                        issues.push(ConfigIssue::new(
                            at.key("kinds").index(i),
                            format!("invalid kind pattern {s:?}: write \"fire.alarm\", \"fire.*\" or \"*\""),
                        ));
                    }
                    p
                })
                .collect();
            if !ok {
                return None;
            }
        }
        Some(f)
    }

    /// The classes forwarded, highest first.
    pub fn wanted_classes(&self) -> &[Class] {
        &self.classes
    }

    /// Whether events of `class` are forwarded at all.
    pub fn wants_class(&self, class: Class) -> bool {
        self.classes.contains(&class)
    }

    /// Whether an event of this kind (in a wanted class) is forwarded.
    pub fn wants_kind(&self, kind: &Kind) -> bool {
        self.kinds.iter().any(|p| p.matches(kind.as_str()))
    }
}

impl KindPattern {
    fn parse(s: &str) -> Option<KindPattern> {
        if s == "*" {
            return Some(KindPattern::Any);
        }
        if let Some(family) = s.strip_suffix(".*") {
            let valid = Kind::is_valid(family) || Kind::is_valid(&format!("{family}.x"));
            return valid.then(|| KindPattern::Prefix(format!("{family}.")));
        }
        Kind::is_valid(s).then(|| KindPattern::Exact(s.to_owned()))
    }

    fn matches(&self, kind: &str) -> bool {
        match self {
            KindPattern::Any => true,
            KindPattern::Exact(k) => k == kind,
            KindPattern::Prefix(p) => kind.starts_with(p.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_patterns_match_exact_family_and_any() {
        let mut issues = Vec::new();
        let f = Filter::parse(
            Some(vec![Class::LifeSafety, Class::Security]),
            Some(vec!["fire.*".into(), "door.forced".into()]),
            &FieldPath::root(),
            &mut issues,
        )
        .expect("valid");
        assert!(f.wants_kind(&Kind::from_static("fire.alarm")));
        assert!(f.wants_kind(&Kind::from_static("door.forced")));
        assert!(!f.wants_kind(&Kind::from_static("firewall.alarm")));
        assert!(!f.wants_class(Class::Telemetry));
        assert!(
            Filter::parse(
                None,
                Some(vec!["Fire!".into()]),
                &FieldPath::root(),
                &mut issues
            )
            .is_none()
        );
        assert_eq!(issues.len(), 1);
    }

    fn urgency(f: Filter, keys: UrgentKeys) -> (Option<Filter>, Vec<ConfigIssue>) {
        let mut issues = Vec::new();
        let at = FieldPath::root().key("uplink").index(0);
        let f = f.with_urgency(keys, Duration::from_secs(60), &at, &mut issues);
        (f, issues)
    }

    #[test]
    fn urgency_defaults_to_life_safety_one_second_and_thirty_seconds() {
        let (f, issues) = urgency(Filter::default(), UrgentKeys::default());
        assert!(issues.is_empty());
        let f = f.expect("valid");
        assert_eq!(f.urgent_classes(), vec![Class::LifeSafety]);
        assert_eq!(f.urgent_backoff_max(), Duration::from_secs(1));
        assert_eq!(f.alarm_delay_threshold(), Duration::from_secs(30));
        // An uplink that does not forward life_safety has nothing urgent by default.
        let (f, _) = urgency(Filter::classes(&[Class::Telemetry]), UrgentKeys::default());
        assert!(f.expect("valid").urgent_classes().is_empty());
    }

    #[test]
    fn bad_urgency_keys_are_refused_at_their_field() {
        let (f, issues) = urgency(
            Filter::classes(&[Class::LifeSafety, Class::Telemetry]),
            UrgentKeys {
                classes: Some(vec![Class::Telemetry, Class::Security]),
                backoff_max: Some(Duration::from_millis(10)),
                delay_threshold: Some(Duration::ZERO),
            },
        );
        assert!(f.is_none());
        let at: Vec<String> = issues.iter().map(|i| i.path.to_string()).collect();
        assert_eq!(
            at,
            vec![
                "uplink[0].urgent_classes[0]",
                "uplink[0].urgent_classes[1]",
                "uplink[0].urgent_backoff_max",
                "uplink[0].alarm_delay_threshold",
            ]
        );
        let (f, issues) = urgency(
            Filter::default(),
            UrgentKeys {
                classes: Some(vec![Class::Security, Class::LifeSafety]),
                backoff_max: Some(Duration::from_millis(500)),
                delay_threshold: Some(Duration::from_secs(10)),
            },
        );
        assert!(issues.is_empty(), "{issues:?}");
        let f = f.expect("valid");
        assert_eq!(f.urgent_classes(), vec![Class::LifeSafety, Class::Security]);
        assert!(f.is_urgent(Class::Security) && !f.is_urgent(Class::Operations));
    }
}
