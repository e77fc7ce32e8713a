//! The Security PUSH wire format, pure: upload bodies, command results, the options block,
//! and `CONTROL DEVICE` commands. Nothing here does I/O or allocates beyond its input.
//!
//! Hand-written because it is plain text (no crate parses iclock bodies): an upload is lines
//! of tab-separated `key=value` pairs (`time=2017-01-10 11:49:32\tpin=1001\t...`), a command
//! result is `ID=<id>&Return=<code>&CMD=<name>` (one per line), a command is
//! `C:<id>:<COMMAND>`. Every parser bounds its work by the input and refuses what it cannot
//! read rather than guessing.

use std::collections::BTreeMap;

/// Longest line accepted in an upload.
pub const MAX_LINE: usize = 4096;
/// Most fields per line.
pub const MAX_FIELDS: usize = 64;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// Not UTF-8 (the controllers send ASCII; names are not in rtlog).
    #[error("body is not UTF-8")]
    NotUtf8,
    /// A line longer than [`MAX_LINE`].
    #[error("line {0} is longer than {MAX_LINE} bytes")]
    LongLine(usize),
    /// A line with more than [`MAX_FIELDS`] fields.
    #[error("line {0} has more than {MAX_FIELDS} fields")]
    TooManyFields(usize),
    /// A field without `=`.
    #[error("line {0}: field {1:?} is not key=value")]
    NotKeyValue(usize, String),
    /// A required field is missing or malformed.
    #[error("line {0}: {1}")]
    Field(usize, &'static str),
    /// Nothing in the body.
    #[error("empty body")]
    Empty,
}

impl ProtoError {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProtoError::NotUtf8 => "not_utf8",
            ProtoError::LongLine(_) => "long_line",
            ProtoError::TooManyFields(_) => "too_many_fields",
            ProtoError::NotKeyValue(..) => "not_key_value",
            ProtoError::Field(..) => "bad_field",
            ProtoError::Empty => "empty",
        }
    }
}

/// One upload line as `key → value` (keys lowercased, as firmware differs in case).
pub type Record = BTreeMap<String, String>;

/// Splits an upload body into records. Blank lines are skipped; a line that is not
/// `key=value` fields is an error for that line only (see [`parse_records`]).
///
/// # Errors
/// [`ProtoError::NotUtf8`] / [`ProtoError::Empty`] for the body as a whole.
pub fn split_body(body: &[u8]) -> Result<Vec<Result<Record, ProtoError>>, ProtoError> {
    let text = std::str::from_utf8(body).map_err(|_| ProtoError::NotUtf8)?;
    let out: Vec<_> = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| parse_line(n, l))
        .collect();
    if out.is_empty() {
        return Err(ProtoError::Empty);
    }
    Ok(out)
}

/// Parses one line of tab-separated `key=value` fields.
///
/// # Errors
/// [`ProtoError`] naming the line.
pub fn parse_line(n: usize, line: &str) -> Result<Record, ProtoError> {
    if line.len() > MAX_LINE {
        return Err(ProtoError::LongLine(n));
    }
    let mut r = Record::new();
    for (i, field) in line.split('\t').filter(|f| !f.is_empty()).enumerate() {
        if i >= MAX_FIELDS {
            return Err(ProtoError::TooManyFields(n));
        }
        let Some((k, v)) = field.split_once('=') else {
            return Err(ProtoError::NotKeyValue(n, field.chars().take(32).collect()));
        };
        let k = k.trim();
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(ProtoError::NotKeyValue(n, field.chars().take(32).collect()));
        }
        r.insert(k.to_ascii_lowercase(), v.trim().to_owned());
    }
    Ok(r)
}

/// Parses every line; the good records and the per-line errors.
pub fn parse_records(body: &[u8]) -> Result<(Vec<Record>, Vec<ProtoError>), ProtoError> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for r in split_body(body)? {
        match r {
            Ok(r) => good.push(r),
            Err(e) => bad.push(e),
        }
    }
    Ok((good, bad))
}

/// An `rtlog` line: one access event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtLog {
    /// `time`, as sent (`YYYY-MM-DD HH:MM:SS`, controller local time).
    pub time: String,
    /// `pin`: the person id (0 or empty: nobody).
    pub pin: Option<String>,
    /// `cardno` (0 or empty: none).
    pub card: Option<String>,
    /// `eventaddr`: the door (or auxiliary input) number.
    pub door: u32,
    /// `event`: the event code.
    pub event: u32,
    /// `inoutstatus`: 0 in, 1 out.
    pub inout: Option<u32>,
    /// `verifytype`.
    pub verify: Option<u32>,
    /// `index`: the controller's log index (restarts on some firmware after a reset).
    pub index: Option<u64>,
}

fn nonzero(v: Option<&String>) -> Option<String> {
    v.filter(|s| !s.is_empty() && s.as_str() != "0")
        .map(|s| s.chars().take(64).collect())
}

impl RtLog {
    /// Reads a record as an rtlog line.
    ///
    /// # Errors
    /// [`ProtoError::Field`] when `time` or `event` is missing or not a number.
    pub fn from_record(n: usize, r: &Record) -> Result<RtLog, ProtoError> {
        let num = |k: &str| r.get(k).and_then(|v| v.parse::<u32>().ok());
        let time = r
            .get("time")
            .filter(|t| t.len() <= 32 && !t.is_empty())
            .ok_or(ProtoError::Field(n, "rtlog line without time"))?
            .clone();
        let event =
            num("event").ok_or(ProtoError::Field(n, "rtlog line without a numeric event"))?;
        Ok(RtLog {
            time,
            pin: nonzero(r.get("pin")),
            card: nonzero(r.get("cardno")),
            door: num("eventaddr").unwrap_or(0),
            event,
            inout: num("inoutstatus"),
            verify: num("verifytype"),
            index: r.get("index").and_then(|v| v.parse().ok()),
        })
    }
}

/// A door's sensor state from `rtstate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensor {
    /// No door sensor.
    None,
    /// Closed.
    Closed,
    /// Open.
    Open,
}

/// An `rtstate` line: the state of every door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtState {
    /// `time`, as sent.
    pub time: String,
    /// Per door (index 0 = door 1): its sensor.
    pub sensors: Vec<Sensor>,
    /// Per door: its alarm bits (1 forced, 2 tamper, 4 duress password, 8 duress
    /// fingerprint, 16 door-sensor alarm).
    pub alarms: Vec<u8>,
}

/// Alarm bit: opened forcefully.
pub const ALARM_FORCED: u8 = 1;
/// Alarm bit: tamper.
pub const ALARM_TAMPER: u8 = 2;

fn hex_nibbles(s: &str) -> Option<Vec<u8>> {
    s.chars()
        .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
        .collect()
}

impl RtState {
    /// Reads a record as an rtstate line: `sensor` holds two bits per door, lowest door in
    /// the lowest bits (0 none, 1 closed, 2 open), `alarm` one byte (two hex digits) per door,
    /// door 1 first.
    ///
    /// # Errors
    /// [`ProtoError::Field`] when a field is missing or not hex.
    pub fn from_record(n: usize, r: &Record) -> Result<RtState, ProtoError> {
        let time = r
            .get("time")
            .filter(|t| t.len() <= 32 && !t.is_empty())
            .ok_or(ProtoError::Field(n, "rtstate line without time"))?
            .clone();
        let sensor = r
            .get("sensor")
            .ok_or(ProtoError::Field(n, "rtstate line without sensor"))?;
        let nibbles =
            hex_nibbles(sensor).ok_or(ProtoError::Field(n, "rtstate sensor is not hex"))?;
        if nibbles.len() > 16 {
            return Err(ProtoError::Field(
                n,
                "rtstate sensor is longer than 16 digits",
            ));
        }
        // The hex number's lowest nibble is its last digit; each nibble holds two doors.
        let mut sensors = Vec::new();
        for nib in nibbles.iter().rev() {
            for shift in [0, 2] {
                sensors.push(match (nib >> shift) & 3 {
                    1 => Sensor::Closed,
                    2 => Sensor::Open,
                    _ => Sensor::None,
                });
            }
        }
        let alarm = r.get("alarm").map(String::as_str).unwrap_or("");
        let a = hex_nibbles(alarm).ok_or(ProtoError::Field(n, "rtstate alarm is not hex"))?;
        if a.len() > 32 {
            return Err(ProtoError::Field(
                n,
                "rtstate alarm is longer than 32 digits",
            ));
        }
        let alarms = a
            .chunks(2)
            .map(|c| c.iter().fold(0u8, |v, d| (v << 4) | d))
            .collect();
        Ok(RtState {
            time,
            sensors,
            alarms,
        })
    }
}

/// One `devicecmd` result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdResult {
    /// The command id.
    pub id: u64,
    /// `Return`: 0 success, negative failure.
    pub ret: i64,
    /// `CMD`, as sent.
    pub cmd: String,
}

/// Parses a `devicecmd` body: one `ID=..&Return=..&CMD=..` per line. Lines that are not
/// results are returned as errors, the good ones still count.
pub fn parse_results(body: &[u8]) -> (Vec<CmdResult>, usize) {
    let Ok(text) = std::str::from_utf8(body) else {
        return (Vec::new(), 1);
    };
    let mut good = Vec::new();
    let mut bad = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.len() > MAX_LINE {
            bad += 1;
            continue;
        }
        let mut id = None;
        let mut ret = None;
        let mut cmd = String::new();
        for kv in line.split('&') {
            match kv.split_once('=') {
                Some(("ID", v)) => id = v.trim().parse().ok(),
                Some(("Return", v)) => ret = v.trim().parse().ok(),
                Some(("CMD", v)) => cmd = v.chars().take(64).collect(),
                _ => {}
            }
        }
        match (id, ret) {
            (Some(id), Some(ret)) => good.push(CmdResult { id, ret, cmd }),
            _ => bad += 1,
        }
    }
    (good, bad)
}

/// The query parameters of an iclock request that campusgw reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `SN`.
    pub sn: Option<String>,
    /// `table`.
    pub table: Option<String>,
    /// `options`.
    pub options: Option<String>,
}

/// Parses a raw query string (`SN=..&table=..`); keys are matched case-insensitively,
/// values are percent-decoded only for the characters serials use.
pub fn parse_query(q: &str) -> Query {
    let mut out = Query::default();
    for kv in q.split('&').take(32) {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let v: String = v.chars().take(64).collect();
        match k.to_ascii_lowercase().as_str() {
            "sn" => out.sn = Some(v),
            "table" => out.table = Some(v),
            "options" => out.options = Some(v),
            _ => {}
        }
    }
    out
}

/// Whether a serial number is plausible (letters, digits, `-`, `_`; 1-32 chars): anything
/// else is refused before it reaches a log line or a map.
pub fn valid_sn(sn: &str) -> bool {
    (1..=32).contains(&sn.len())
        && sn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The options block answering the handshake (`GET /iclock/cdata?SN=..&options=all`, and
/// `/iclock/push` after a registry): `RequestDelay` is the poll interval, i.e. the latency
/// of every command.
pub fn options_block(
    sn: &str,
    registry_code: &str,
    request_delay_s: u64,
    timeout_s: u64,
) -> String {
    let mut s = String::new();
    let lines = [
        format!("GET OPTION FROM: {sn}"),
        "registry=ok".to_owned(),
        format!("RegistryCode={registry_code}"),
        "ServerVersion=campusgw".to_owned(),
        "PushProtVer=3.1".to_owned(),
        "ErrorDelay=10".to_owned(),
        format!("RequestDelay={request_delay_s}"),
        format!("Delay={request_delay_s}"),
        "TransTimes=00:00;12:00".to_owned(),
        "TransInterval=1".to_owned(),
        "TransTables=User Transaction".to_owned(),
        "Realtime=1".to_owned(),
        format!("SessionID={registry_code}"),
        format!("TimeoutSec={timeout_s}"),
        "Encrypt=0".to_owned(),
    ];
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// Parses an options block (the simulator's side): `key=value` lines.
pub fn parse_options(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// `CONTROL DEVICE AABBCCDD` (R15 §9.3): each group two hex digits.
pub fn control_device(aa: u8, door: u8, cc: u8, dd: u8) -> String {
    format!("CONTROL DEVICE {aa:02X}{door:02X}{cc:02X}{dd:02X}")
}

/// A parsed `CONTROL DEVICE` (the simulator's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// AA: 01 output, 02 cancel alarm, 03 restart, 04 normal-open, 06 lock.
    pub op: u8,
    /// BB: door (0 = all).
    pub door: u8,
    /// CC: 01 lock, 02 auxiliary output.
    pub target: u8,
    /// DD: 00 off, FF normal open, else seconds.
    pub value: u8,
}

/// Parses a `C:<id>:<COMMAND>` line; `None` when it is not one (a bare command is dropped by
/// real controllers too).
pub fn parse_command_line(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix("C:")?;
    let (id, cmd) = rest.split_once(':')?;
    Some((id.parse().ok()?, cmd))
}

/// Parses `CONTROL DEVICE AABBCCDD[EE]`.
pub fn parse_control(cmd: &str) -> Option<Control> {
    let hex = cmd.strip_prefix("CONTROL DEVICE ")?.trim();
    if !(hex.len() == 8 || hex.len() == 10) || !hex.is_ascii() {
        return None;
    }
    let b = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    Some(Control {
        op: b(0)?,
        door: b(2)?,
        target: b(4)?,
        value: b(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rtlog_line_reads_like_the_protocol_example() {
        let body = b"time=2017-01-10 11:49:32\tpin=1001\tcardno=0\teventaddr=1\tevent=0\tinoutstatus=0\tverifytype=15\tindex=42\r\n";
        let (good, bad) = parse_records(body).unwrap();
        assert!(bad.is_empty());
        let l = RtLog::from_record(1, &good[0]).unwrap();
        assert_eq!(l.pin.as_deref(), Some("1001"));
        assert_eq!(l.card, None);
        assert_eq!(
            (l.door, l.event, l.inout, l.index),
            (1, 0, Some(0), Some(42))
        );
    }

    #[test]
    fn garbage_lines_are_refused_one_by_one() {
        let body = b"time=2017-01-10 11:49:32\tevent=0\nnot a record\n\n\x01=\x02\n";
        let (good, bad) = parse_records(body).unwrap();
        assert_eq!((good.len(), bad.len()), (1, 2));
        assert_eq!(parse_records(b"\n\n"), Err(ProtoError::Empty));
        assert_eq!(parse_records(&[0xff, 0xfe]), Err(ProtoError::NotUtf8));
        let long = format!("time={}", "x".repeat(MAX_LINE));
        assert!(matches!(
            parse_records(long.as_bytes()).unwrap().1[0],
            ProtoError::LongLine(1)
        ));
        let r = parse_line(1, "event=x\ttime=t").unwrap();
        assert!(RtLog::from_record(1, &r).is_err());
    }

    #[test]
    fn rtstate_sensor_bits_and_alarm_bytes_map_to_doors() {
        // door 1 closed (01), door 2 open (10) → 0b1001 = 9; door 2 forced.
        let r = parse_line(
            1,
            "time=2020-01-01 00:00:00\tsensor=09\trelay=00\talarm=0001",
        )
        .unwrap();
        let s = RtState::from_record(1, &r).unwrap();
        assert_eq!(s.sensors[0], Sensor::Closed);
        assert_eq!(s.sensors[1], Sensor::Open);
        assert_eq!(s.sensors[2], Sensor::None);
        assert_eq!(s.alarms, vec![0, ALARM_FORCED]);
        let bad = parse_line(1, "time=t\tsensor=zz").unwrap();
        assert!(RtState::from_record(1, &bad).is_err());
    }

    #[test]
    fn results_commands_and_queries_round_trip() {
        let (r, bad) = parse_results(
            b"ID=221&Return=0&CMD=CONTROL DEVICE\nID=222&Return=-1002&CMD=CONTROL DEVICE\njunk\n",
        );
        assert_eq!(bad, 1);
        assert_eq!((r[0].id, r[0].ret), (221, 0));
        assert_eq!(r[1].ret, -1002);
        let c = control_device(1, 1, 1, 5);
        assert_eq!(c, "CONTROL DEVICE 01010105");
        let line = format!("C:221:{c}");
        let (id, cmd) = parse_command_line(&line).unwrap();
        assert_eq!(id, 221);
        assert_eq!(
            parse_control(cmd),
            Some(Control {
                op: 1,
                door: 1,
                target: 1,
                value: 5
            })
        );
        assert_eq!(parse_command_line("CONTROL DEVICE 01010105"), None);
        let q = parse_query("SN=ABC123&options=all&pushver=3.1.1");
        assert_eq!(q.sn.as_deref(), Some("ABC123"));
        assert_eq!(q.options.as_deref(), Some("all"));
        assert!(valid_sn("CGXK201760001") && !valid_sn("a b") && !valid_sn(""));
        let opts = parse_options(&options_block("S1", "abc", 1, 10));
        assert_eq!(opts.get("RequestDelay").map(String::as_str), Some("1"));
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_parsed_or_refused_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
        ) {
            if let Ok((good, _)) = parse_records(&body) {
                for r in &good {
                    let _ = RtLog::from_record(1, r);
                    let _ = RtState::from_record(1, r);
                }
            }
            let _ = parse_results(&body);
            if let Ok(s) = std::str::from_utf8(&body) {
                let _ = parse_query(s);
                if let Some((_, c)) = parse_command_line(s) { let _ = parse_control(c); }
            }
        }
    }
}
