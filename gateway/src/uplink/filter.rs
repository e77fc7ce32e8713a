//! Which events an uplink forwards: a class list and kind patterns.

use campusgw_sdk::{Class, ConfigIssue, FieldPath, Kind};

/// The classes and kinds an uplink forwards. Events of a wanted class whose kind does not
/// match are skipped: their cursor moves past them as if confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    classes: Vec<Class>,
    kinds: Vec<KindPattern>,
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
        }
    }
}

impl Filter {
    /// Everything of `classes`, any kind.
    pub fn classes(classes: &[Class]) -> Filter {
        Filter {
            classes: classes.to_vec(),
            kinds: vec![KindPattern::Any],
        }
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
}
