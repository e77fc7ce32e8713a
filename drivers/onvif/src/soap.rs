//! The ONVIF SOAP calls the driver makes, as pure request builders and response parsers.
//!
//! SOAP 1.2 (`application/soap+xml`). Namespaces (ONVIF Core / WSDLs, release 2.x–24.x):
//! `tds` device, `trt` media ver10, `tev` events, `wsnt` WS-BaseNotification 1.3, `wsa`
//! WS-Addressing 1.0. Event calls carry `wsa:Action` and `wsa:To` because the subscription
//! address is only known from the `CreatePullPointSubscription` answer and several firmwares
//! route on `wsa:To`. Every parser goes through [`crate::xml::parse`] and so refuses DTDs,
//! oversize and over-deep documents; none of them panics (fuzzed: `fuzz/onvif_parse`).

use chrono::{DateTime, NaiveDate, Utc};

use crate::xml::{self, Element, XmlError, escape};

/// ONVIF device service namespace.
pub const NS_TDS: &str = "http://www.onvif.org/ver10/device/wsdl";
/// ONVIF media (ver10) namespace.
pub const NS_TRT: &str = "http://www.onvif.org/ver10/media/wsdl";
/// ONVIF event service namespace.
pub const NS_TEV: &str = "http://www.onvif.org/ver10/events/wsdl";
/// OASIS WS-BaseNotification 1.3 namespace.
pub const NS_WSNT: &str = "http://docs.oasis-open.org/wsn/b-2";

/// event.wsdl: `PullMessages` action.
pub const ACTION_PULL: &str =
    "http://www.onvif.org/ver10/events/wsdl/PullPointSubscription/PullMessagesRequest";
/// event.wsdl: `CreatePullPointSubscription` action.
pub const ACTION_CREATE: &str =
    "http://www.onvif.org/ver10/events/wsdl/EventPortType/CreatePullPointSubscriptionRequest";
/// WS-BaseNotification bw-2: `Renew` action.
pub const ACTION_RENEW: &str =
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/RenewRequest";
/// WS-BaseNotification bw-2: `Unsubscribe` action.
pub const ACTION_UNSUBSCRIBE: &str =
    "http://docs.oasis-open.org/wsn/bw-2/SubscriptionManager/UnsubscribeRequest";

/// Why a SOAP answer gave no usable value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SoapError {
    /// The bytes were refused or not XML.
    #[error(transparent)]
    Xml(#[from] XmlError),
    /// The camera answered with a SOAP fault.
    #[error("soap fault {code}{}: {reason}", subcode.as_deref().map(|s| format!(" / {s}")).unwrap_or_default())]
    Fault {
        /// `Code/Value`, e.g. `env:Sender`.
        code: String,
        /// `Code/Subcode/Value`, e.g. `ter:NotAuthorized`.
        subcode: Option<String>,
        /// `Reason/Text`.
        reason: String,
    },
    /// A required element was absent.
    #[error("answer lacks {0}")]
    Missing(&'static str),
    /// A value did not parse.
    #[error("bad {what}: {value:?}")]
    BadValue {
        /// Which value.
        what: &'static str,
        /// What was there (truncated).
        value: String,
    },
}

impl SoapError {
    /// A fault whose subcode says the credentials were refused.
    pub fn is_not_authorized(&self) -> bool {
        matches!(self, SoapError::Fault { subcode: Some(s), .. } if s.ends_with("NotAuthorized"))
    }
}

/// Wraps `body` (and optional WS-Addressing action/target) into a SOAP 1.2 envelope with
/// `security` (a `wsse:Security` header or empty).
pub fn envelope(security: &str, addressing: Option<(&str, &str)>, body: &str) -> String {
    let wsa = addressing
        .map(|(action, to)| {
            format!(
                "<wsa:Action>{}</wsa:Action><wsa:To>{}</wsa:To>",
                escape(action),
                escape(to)
            )
        })
        .unwrap_or_default();
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing" "#,
            r#"xmlns:tds="{tds}" xmlns:trt="{trt}" xmlns:tev="{tev}" xmlns:wsnt="{wsnt}" xmlns:tt="http://www.onvif.org/ver10/schema">"#,
            "<s:Header>{security}{wsa}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
        ),
        tds = NS_TDS,
        trt = NS_TRT,
        tev = NS_TEV,
        wsnt = NS_WSNT,
        security = security,
        wsa = wsa,
        body = body,
    )
}

/// `tds:GetSystemDateAndTime`.
pub fn get_system_date_and_time() -> String {
    "<tds:GetSystemDateAndTime/>".into()
}

/// `tds:GetServices` without capabilities.
pub fn get_services() -> String {
    "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>".into()
}

/// (namespace, XAddr) of each service in a `GetServicesResponse`.
///
/// # Errors
/// [`SoapError`] for a fault or refused XML.
pub fn parse_services(input: &[u8]) -> Result<Vec<(String, String)>, SoapError> {
    let b = body(input)?;
    Ok(b.children_named("Service")
        .filter_map(|s| {
            Some((
                s.child("Namespace")?.text().to_owned(),
                s.child("XAddr")?.text().to_owned(),
            ))
        })
        .take(32)
        .collect())
}

/// event.wsdl: `GetEventProperties` action.
pub const ACTION_EVENT_PROPERTIES: &str =
    "http://www.onvif.org/ver10/events/wsdl/EventPortType/GetEventPropertiesRequest";

/// `tev:GetEventProperties`.
pub fn get_event_properties() -> String {
    "<tev:GetEventProperties/>".into()
}

/// The topics (prefixes dropped, `/`-joined) of a `GetEventPropertiesResponse`'s `TopicSet`:
/// every element marked `wstop:topic="true"` (at most 256).
///
/// # Errors
/// [`SoapError`] for a fault, refused XML or a missing `TopicSet`.
pub fn parse_event_properties(input: &[u8]) -> Result<Vec<String>, SoapError> {
    let b = body(input)?;
    let set = b.child("TopicSet").ok_or(SoapError::Missing("TopicSet"))?;
    let mut out = Vec::new();
    let mut path = Vec::new();
    for c in &set.children {
        collect_topics(c, &mut path, &mut out);
    }
    Ok(out)
}

fn collect_topics<'a>(e: &'a Element, path: &mut Vec<&'a str>, out: &mut Vec<String>) {
    if e.name == "MessageDescription" || out.len() >= 256 {
        return;
    }
    path.push(&e.name);
    if e.attr("topic") == Some("true") {
        out.push(path.join("/"));
    }
    for c in &e.children {
        collect_topics(c, path, out);
    }
    path.pop();
}

/// `trt:GetProfiles`.
pub fn get_profiles() -> String {
    "<trt:GetProfiles/>".into()
}

/// `trt:GetStreamUri` for RTP-Unicast over RTSP.
pub fn get_stream_uri(profile: &str) -> String {
    format!(
        "<trt:GetStreamUri><trt:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trt:StreamSetup><trt:ProfileToken>{}</trt:ProfileToken></trt:GetStreamUri>",
        escape(profile)
    )
}

/// `trt:GetSnapshotUri`.
pub fn get_snapshot_uri(profile: &str) -> String {
    format!(
        "<trt:GetSnapshotUri><trt:ProfileToken>{}</trt:ProfileToken></trt:GetSnapshotUri>",
        escape(profile)
    )
}

/// `tev:CreatePullPointSubscription` lasting `secs` unless renewed.
pub fn create_pull_point_subscription(secs: u64) -> String {
    format!(
        "<tev:CreatePullPointSubscription><tev:InitialTerminationTime>PT{secs}S</tev:InitialTerminationTime></tev:CreatePullPointSubscription>"
    )
}

/// `tev:PullMessages` waiting up to `secs` for at most `limit` messages.
pub fn pull_messages(secs: u64, limit: u32) -> String {
    format!(
        "<tev:PullMessages><tev:Timeout>PT{secs}S</tev:Timeout><tev:MessageLimit>{limit}</tev:MessageLimit></tev:PullMessages>"
    )
}

/// `wsnt:Renew` for another `secs`.
pub fn renew(secs: u64) -> String {
    format!("<wsnt:Renew><wsnt:TerminationTime>PT{secs}S</wsnt:TerminationTime></wsnt:Renew>")
}

/// `wsnt:Unsubscribe`.
pub fn unsubscribe() -> String {
    "<wsnt:Unsubscribe/>".into()
}

/// Parses an answer and returns its `Body`'s first child, or the fault it carries.
///
/// # Errors
/// [`SoapError`] for refused XML, a fault or a missing body.
pub fn body(input: &[u8]) -> Result<Element, SoapError> {
    let root = xml::parse(input)?;
    if root.name != "Envelope" {
        return Err(SoapError::Missing("Envelope"));
    }
    let body = root.child("Body").ok_or(SoapError::Missing("Body"))?;
    let first = body
        .children
        .first()
        .ok_or(SoapError::Missing("Body content"))?;
    if first.name == "Fault" {
        return Err(fault(first));
    }
    Ok(first.clone())
}

fn fault(f: &Element) -> SoapError {
    let text = |p: &[&str]| f.path(p).map(|e| e.text().to_owned());
    SoapError::Fault {
        code: text(&["Code", "Value"])
            .or_else(|| text(&["faultcode"]))
            .unwrap_or_default(),
        subcode: text(&["Code", "Subcode", "Value"]),
        reason: text(&["Reason", "Text"])
            .or_else(|| text(&["faultstring"]))
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
    }
}

fn need<'a>(e: &'a Element, path: &[&str], what: &'static str) -> Result<&'a Element, SoapError> {
    e.path(path).ok_or(SoapError::Missing(what))
}

fn bad(what: &'static str, value: &str) -> SoapError {
    SoapError::BadValue {
        what,
        value: value.chars().take(64).collect(),
    }
}

/// The camera's UTC clock from a `GetSystemDateAndTimeResponse`.
///
/// # Errors
/// [`SoapError`] when absent or out of range.
pub fn parse_system_date_and_time(input: &[u8]) -> Result<DateTime<Utc>, SoapError> {
    let b = body(input)?;
    let utc = need(&b, &["SystemDateAndTime", "UTCDateTime"], "UTCDateTime")?;
    let num = |p: &[&str], what: &'static str| -> Result<u32, SoapError> {
        let e = need(utc, p, what)?;
        e.text().parse().map_err(|_| bad(what, e.text()))
    };
    let year = i32::try_from(num(&["Date", "Year"], "Year")?).map_err(|_| bad("Year", ""))?;
    let date = NaiveDate::from_ymd_opt(
        year,
        num(&["Date", "Month"], "Month")?,
        num(&["Date", "Day"], "Day")?,
    )
    .ok_or_else(|| bad("date", ""))?;
    let t = date
        .and_hms_opt(
            num(&["Time", "Hour"], "Hour")?,
            num(&["Time", "Minute"], "Minute")?,
            num(&["Time", "Second"], "Second")?,
        )
        .ok_or_else(|| bad("time", ""))?;
    Ok(t.and_utc())
}

/// One media profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Its token.
    pub token: String,
    /// Its display name.
    pub name: String,
}

/// The profiles of a `GetProfilesResponse` (at most 16 kept).
///
/// # Errors
/// [`SoapError`] when the answer holds no profile.
pub fn parse_profiles(input: &[u8]) -> Result<Vec<Profile>, SoapError> {
    let b = body(input)?;
    let profiles: Vec<Profile> = b
        .children_named("Profiles")
        .filter_map(|p| {
            Some(Profile {
                token: p.attr("token")?.to_owned(),
                name: p
                    .child("Name")
                    .map(|n| n.text().to_owned())
                    .unwrap_or_default(),
            })
        })
        .take(16)
        .collect();
    if profiles.is_empty() {
        return Err(SoapError::Missing("Profiles"));
    }
    Ok(profiles)
}

/// The `MediaUri/Uri` of a `GetStreamUriResponse` or `GetSnapshotUriResponse`.
///
/// # Errors
/// [`SoapError`] when absent.
pub fn parse_media_uri(input: &[u8]) -> Result<String, SoapError> {
    let b = body(input)?;
    let uri = need(&b, &["MediaUri", "Uri"], "MediaUri/Uri")?.text();
    if uri.is_empty() || uri.len() > 2048 {
        return Err(bad("Uri", uri));
    }
    Ok(uri.to_owned())
}

/// A PullPoint subscription as the camera described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Where `PullMessages`, `Renew` and `Unsubscribe` go.
    pub address: String,
    /// The camera's clock at creation.
    pub current_time: Option<DateTime<Utc>>,
    /// When it ends unless renewed (camera clock).
    pub termination_time: Option<DateTime<Utc>>,
}

fn time_of(e: &Element, name: &str) -> Option<DateTime<Utc>> {
    e.child(name)
        .and_then(|t| DateTime::parse_from_rfc3339(t.text()).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A `CreatePullPointSubscriptionResponse`.
///
/// # Errors
/// [`SoapError`] when it lacks the subscription address.
pub fn parse_subscription(input: &[u8]) -> Result<Subscription, SoapError> {
    let b = body(input)?;
    let address = need(
        &b,
        &["SubscriptionReference", "Address"],
        "SubscriptionReference/Address",
    )?
    .text()
    .to_owned();
    if address.is_empty() {
        return Err(SoapError::Missing("SubscriptionReference/Address"));
    }
    Ok(Subscription {
        address,
        current_time: time_of(&b, "CurrentTime"),
        termination_time: time_of(&b, "TerminationTime"),
    })
}

/// A `RenewResponse`: the new termination time, if stated.
///
/// # Errors
/// [`SoapError`] for a fault or refused XML.
pub fn parse_renew(input: &[u8]) -> Result<Option<DateTime<Utc>>, SoapError> {
    let b = body(input)?;
    Ok(time_of(&b, "TerminationTime"))
}

/// `PropertyOperation` of a notification (ONVIF Core §9.2.2 "Properties").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyOperation {
    /// The current state, sent when a subscription starts: not a new happening.
    Initialized,
    /// The state changed.
    Changed,
    /// The property no longer exists.
    Deleted,
}

/// One `wsnt:NotificationMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The topic expression as sent, e.g. `tns1:RuleEngine/CellMotionDetector/Motion`.
    pub topic: String,
    /// `tt:Message/@UtcTime` as sent (kept verbatim for de-duplication).
    pub utc_time: String,
    /// Parsed `UtcTime`.
    pub time: Option<DateTime<Utc>>,
    /// `PropertyOperation`, absent for plain (non-property) events.
    pub operation: Option<PropertyOperation>,
    /// `Source/SimpleItem` name/value pairs.
    pub source: Vec<(String, String)>,
    /// `Data/SimpleItem` name/value pairs.
    pub data: Vec<(String, String)>,
}

/// The notifications of a `PullMessagesResponse` (at most 256 kept).
///
/// # Errors
/// [`SoapError`] for a fault or refused XML.
pub fn parse_pull_messages(input: &[u8]) -> Result<Vec<Notification>, SoapError> {
    let b = body(input)?;
    if b.name != "PullMessagesResponse" {
        return Err(SoapError::Missing("PullMessagesResponse"));
    }
    Ok(b.children_named("NotificationMessage")
        .filter_map(notification)
        .take(256)
        .collect())
}

fn notification(n: &Element) -> Option<Notification> {
    let topic = n.child("Topic")?.text().to_owned();
    let msg = n.path(&["Message", "Message"])?;
    let utc_time = msg.attr("UtcTime").unwrap_or_default().to_owned();
    let operation = match msg.attr("PropertyOperation") {
        Some("Initialized") => Some(PropertyOperation::Initialized),
        Some("Changed") => Some(PropertyOperation::Changed),
        Some("Deleted") => Some(PropertyOperation::Deleted),
        _ => None,
    };
    let items = |name: &str| -> Vec<(String, String)> {
        msg.child(name)
            .map(|s| {
                s.children_named("SimpleItem")
                    .filter_map(|i| Some((i.attr("Name")?.to_owned(), i.attr("Value")?.to_owned())))
                    .take(16)
                    .collect()
            })
            .unwrap_or_default()
    };
    Some(Notification {
        topic,
        time: DateTime::parse_from_rfc3339(&utc_time)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        utc_time,
        operation,
        source: items("Source"),
        data: items("Data"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_soap_fault_is_reported_with_its_subcode_and_reason() {
        let f = br#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>ter:NotAuthorized</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">Sender not Authorized</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>"#;
        let e = parse_profiles(f).expect_err("fault");
        assert!(e.is_not_authorized());
        assert_eq!(
            e.to_string(),
            "soap fault s:Sender / ter:NotAuthorized: Sender not Authorized"
        );
    }

    #[test]
    fn event_properties_list_the_leaf_topics_without_prefixes() {
        let a = br#"<s:Envelope xmlns:s="x"><s:Body><tev:GetEventPropertiesResponse><wsnt:FixedTopicSet>true</wsnt:FixedTopicSet><wstop:TopicSet>
            <tns1:RuleEngine wstop:topic="false"><CellMotionDetector wstop:topic="false"><Motion wstop:topic="true"><tt:MessageDescription IsProperty="true"><tt:Data><tt:SimpleItemDescription Name="IsMotion" Type="xs:boolean"/></tt:Data></tt:MessageDescription></Motion></CellMotionDetector></tns1:RuleEngine>
            <tns1:Device wstop:topic="false"><tnshik:Network wstop:topic="false"><tnshik:EthernetBroken wstop:topic="true"/></tnshik:Network></tns1:Device>
            </wstop:TopicSet></tev:GetEventPropertiesResponse></s:Body></s:Envelope>"#;
        assert_eq!(
            parse_event_properties(a).expect("parses"),
            vec![
                "RuleEngine/CellMotionDetector/Motion",
                "Device/Network/EthernetBroken"
            ]
        );
    }

    #[test]
    fn an_envelope_without_a_body_is_missing_not_a_panic() {
        assert_eq!(
            parse_media_uri(b"<Envelope/>"),
            Err(SoapError::Missing("Body"))
        );
    }
}
