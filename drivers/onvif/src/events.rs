//! ONVIF event topics → campusgw events.
//!
//! | topic (prefixes ignored)                        | state item          | kind              | class      |
//! |-------------------------------------------------|---------------------|-------------------|------------|
//! | `RuleEngine/CellMotionDetector/Motion`          | `IsMotion`          | `video.motion`    | operations |
//! | `VideoSource/MotionAlarm`                       | `State`             | `video.motion`    | operations |
//! | `VideoSource/GlobalSceneChange/*`               | `State`             | `video.tamper`    | security   |
//! | `RuleEngine/TamperDetector/Tamper`              | `IsTamper`          | `video.tamper`    | security   |
//! | `RuleEngine/FieldDetector/ObjectsInside`        | `IsInside`          | `video.intrusion` | security   |
//! | `RuleEngine/LineDetector/Crossed`               | (none: an instant)  | `video.intrusion` | security   |
//!
//! Properties (ONVIF Core §9.2.2): `Changed` to active is a new event; `Changed` to inactive
//! of a tamper or intrusion property is `video.cleared` (operations) naming the kind it
//! clears, and of motion only updates the state (motion ends every few seconds). `Initialized`
//! is the current state that a camera sends when a subscription starts: it is state, not a new
//! alarm, and produces an event only when it differs from the state we knew before a gap (a
//! camera that rebooted or a subscription that had to be re-created): then the change
//! happened while we were not listening and is reported with `"initial": true`. `Deleted`
//! forgets the property.
//!
//! `origin_ref` is the device's own identity of the message: a SHA-256 over UtcTime, topic,
//! source items and data items (sorted), so the same notification delivered twice (a
//! re-sent PullMessages answer, a second subscription overlapping the first) is a duplicate,
//! and two different happenings never share a key.

use std::collections::HashMap;

use campusgw_sdk::{Class, DeviceId, Kind, Location, NewEvent};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::soap::{Notification, PropertyOperation};

/// `video.motion`.
pub const VIDEO_MOTION: Kind = Kind::from_static("video.motion");
/// `video.tamper`.
pub const VIDEO_TAMPER: Kind = Kind::from_static("video.tamper");
/// `video.intrusion`.
pub const VIDEO_INTRUSION: Kind = Kind::from_static("video.intrusion");
/// `video.cleared`: a tamper or intrusion state ended.
pub const VIDEO_CLEARED: Kind = Kind::from_static("video.cleared");
/// `video.snapshot`: a stored snapshot.
pub const VIDEO_SNAPSHOT: Kind = Kind::from_static("video.snapshot");
/// `video.streams`: a camera's RTSP links (per profile) learnt or changed.
pub const VIDEO_STREAMS: Kind = Kind::from_static("video.streams");
/// `device.clock_skew`: a camera's clock is off by more than the configured limit.
pub const DEVICE_CLOCK_SKEW: Kind = Kind::from_static("device.clock_skew");

/// What a topic means to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Motion.
    Motion,
    /// Tamper or scene change.
    Tamper,
    /// Field detection (a state).
    Field,
    /// Line crossing (an instant).
    Line,
}

impl TopicKind {
    /// The kind and class of an active edge.
    pub fn kind(self) -> (Kind, Class) {
        match self {
            TopicKind::Motion => (VIDEO_MOTION, Class::Operations),
            TopicKind::Tamper => (VIDEO_TAMPER, Class::Security),
            TopicKind::Field | TopicKind::Line => (VIDEO_INTRUSION, Class::Security),
        }
    }
}

/// The topic with every segment's namespace prefix dropped.
pub fn plain_topic(topic: &str) -> String {
    topic
        .trim()
        .split('/')
        .map(|s| s.rsplit_once(':').map_or(s, |(_, l)| l))
        .collect::<Vec<_>>()
        .join("/")
}

/// Classifies a topic; `None` for topics we do not map.
pub fn classify(topic: &str) -> Option<TopicKind> {
    let t = plain_topic(topic);
    if t.ends_with("CellMotionDetector/Motion") || t == "VideoSource/MotionAlarm" {
        Some(TopicKind::Motion)
    } else if t.starts_with("VideoSource/GlobalSceneChange") || t.ends_with("TamperDetector/Tamper")
    {
        Some(TopicKind::Tamper)
    } else if t.ends_with("FieldDetector/ObjectsInside") {
        Some(TopicKind::Field)
    } else if t.ends_with("LineDetector/Crossed") {
        Some(TopicKind::Line)
    } else {
        None
    }
}

/// Data item names that carry a state, by firmware family.
const STATE_ITEMS: [&str; 4] = ["IsMotion", "State", "IsTamper", "IsInside"];

fn active(kind: TopicKind, n: &Notification) -> Option<bool> {
    if kind == TopicKind::Line {
        return Some(true);
    }
    n.data
        .iter()
        .find(|(k, _)| STATE_ITEMS.contains(&k.as_str()))
        .and_then(|(_, v)| match v.trim() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        })
}

/// The content key of a notification (see the module doc).
pub fn origin_ref(n: &Notification) -> String {
    let mut source = n.source.clone();
    source.sort();
    let mut data = n.data.clone();
    data.sort();
    let mut h = Sha256::new();
    for part in [n.utc_time.as_str(), &plain_topic(&n.topic)] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    for (k, v) in source
        .iter()
        .chain([(String::new(), String::new())].iter())
        .chain(&data)
    {
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let d = h.finalize();
    let hex: String = d.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("onvif:{hex}")
}

/// Known property states of one camera, kept across subscriptions so a gap can be detected.
#[derive(Debug, Default, Clone)]
pub struct PropertyStates {
    states: HashMap<String, bool>,
}

impl PropertyStates {
    /// Every known property and its state, for the status board.
    pub fn snapshot(&self) -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = self.states.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }
}

fn property_key(n: &Notification) -> String {
    let mut source = n.source.clone();
    source.sort();
    let src: Vec<String> = source.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{}|{}", plain_topic(&n.topic), src.join(","))
}

/// Maps one notification from `camera` (at `location`) to an event, updating `states`.
/// `None` for unmapped topics and for notifications that are state only.
pub fn map(
    n: &Notification,
    camera: &DeviceId,
    location: Option<&Location>,
    states: &mut PropertyStates,
) -> Option<NewEvent> {
    let kind = classify(&n.topic)?;
    let key = property_key(n);
    if n.operation == Some(PropertyOperation::Deleted) {
        states.states.remove(&key);
        return None;
    }
    let now = active(kind, n)?;
    let before = if kind == TopicKind::Line {
        None
    } else {
        states.states.insert(key, now)
    };
    let initial = n.operation == Some(PropertyOperation::Initialized);
    if initial && before.is_none_or(|b| b == now) {
        return None;
    }
    let (kind_name, class) = match (now, kind) {
        (true, k) => k.kind(),
        (false, TopicKind::Motion) => return None,
        (false, _) => (VIDEO_CLEARED, Class::Operations),
    };
    let mut payload = json!({
        "camera": camera.as_str(),
        "topic": plain_topic(&n.topic),
        "active": now,
        "source": items(&n.source),
        "data": items(&n.data),
    });
    if !now {
        payload["clears"] = json!(kind.kind().0.as_str());
    }
    if initial {
        payload["initial"] = json!(true);
    }
    let mut e = NewEvent::new(kind_name, class)
        .device(camera.clone())
        .payload(payload)
        .origin_ref(origin_ref(n));
    if let Some(t) = n.time {
        e = e.occurred_at(t);
    }
    if let Some(l) = location {
        e = e.location(l.clone());
    }
    Some(e)
}

fn items(v: &[(String, String)]) -> Value {
    Value::Object(
        v.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<String, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(topic: &str, op: Option<PropertyOperation>, item: (&str, &str)) -> Notification {
        Notification {
            topic: topic.into(),
            utc_time: "2026-12-02T04:00:00Z".into(),
            time: None,
            operation: op,
            source: vec![("VideoSourceConfigurationToken".into(), "vsc1".into())],
            data: vec![(item.0.into(), item.1.into())],
        }
    }

    fn cam() -> DeviceId {
        DeviceId::new("cam1").expect("id")
    }

    #[test]
    fn topics_map_to_their_kinds_and_classes() {
        let mut s = PropertyStates::default();
        let cases = [
            (
                "tns1:RuleEngine/CellMotionDetector/Motion",
                "IsMotion",
                "video.motion",
                Class::Operations,
            ),
            (
                "tns1:VideoSource/MotionAlarm",
                "State",
                "video.motion",
                Class::Operations,
            ),
            (
                "tns1:VideoSource/GlobalSceneChange/ImagingService",
                "State",
                "video.tamper",
                Class::Security,
            ),
            (
                "tns1:RuleEngine/TamperDetector/Tamper",
                "IsTamper",
                "video.tamper",
                Class::Security,
            ),
            (
                "tns1:RuleEngine/FieldDetector/ObjectsInside",
                "IsInside",
                "video.intrusion",
                Class::Security,
            ),
            (
                "tns1:RuleEngine/LineDetector/Crossed",
                "ObjectId",
                "video.intrusion",
                Class::Security,
            ),
        ];
        for (topic, item, kind, class) in cases {
            let n = note(topic, Some(PropertyOperation::Changed), (item, "true"));
            let e = map(&n, &cam(), None, &mut s).expect(topic);
            assert_eq!((e.kind.as_str(), e.class), (kind, class), "{topic}");
        }
        let other = note(
            "tns1:Device/Trigger/DigitalInput",
            None,
            ("LogicalState", "true"),
        );
        assert!(map(&other, &cam(), None, &mut s).is_none());
    }

    #[test]
    fn initialized_is_state_unless_it_differs_from_what_was_known_before_a_gap() {
        let mut s = PropertyStates::default();
        let t = "tns1:RuleEngine/TamperDetector/Tamper";
        let init = |v| note(t, Some(PropertyOperation::Initialized), ("IsTamper", v));
        assert!(
            map(&init("true"), &cam(), None, &mut s).is_none(),
            "unknown before"
        );
        assert!(
            map(&init("true"), &cam(), None, &mut s).is_none(),
            "unchanged"
        );
        let cleared = map(&init("false"), &cam(), None, &mut s).expect("changed in a gap");
        assert_eq!(cleared.kind, VIDEO_CLEARED);
        let again = map(&init("true"), &cam(), None, &mut s).expect("changed in a gap");
        assert_eq!(again.kind, VIDEO_TAMPER);
        assert_eq!(again.payload["initial"], json!(true));
    }

    #[test]
    fn the_same_notification_has_the_same_origin_ref_and_a_different_one_does_not() {
        let a = note(
            "tns1:RuleEngine/CellMotionDetector/Motion",
            None,
            ("IsMotion", "true"),
        );
        let mut b = a.clone();
        b.topic = "tt:RuleEngine/CellMotionDetector/Motion".into();
        assert_eq!(origin_ref(&a), origin_ref(&b), "prefix is not content");
        let mut c = a.clone();
        c.utc_time = "2026-12-02T04:00:01Z".into();
        assert_ne!(origin_ref(&a), origin_ref(&c));
        let mut d = a.clone();
        d.data = vec![("IsMotion".into(), "false".into())];
        assert_ne!(origin_ref(&a), origin_ref(&d));
    }
}
