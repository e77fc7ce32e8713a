//! A scripted broker on `127.0.0.1:0` that misbehaves on purpose (rumqtt's reliability tests
//! against a scripted broker): it hangs up during the handshake, refuses the client id,
//! answers slowly, withholds PUBACKs (all of them, or each until the test releases it), or
//! behaves by proxying byte for byte to a real
//! mosquitto (plain or TLS: the bytes pass through untouched).
//!
//! The behaviour applies to each new connection; [`FakeBroker::set`] changes it, and also
//! hangs up the connections held open by [`Act::Mute`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the fake broker does with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Reads the client's first bytes (CONNECT, or a TLS ClientHello) and hangs up.
    HangUp,
    /// Answers CONNECT with this CONNACK code (MQTT 3.1.1 return code, or MQTT 5 reason
    /// code when the client spoke MQTT 5) and hangs up.
    Refuse(u8),
    /// Holds the client's first bytes this long, then proxies to the real broker.
    Delay(Duration),
    /// Accepts the session (CONNACK 0), answers PINGREQ, never sends a PUBACK.
    Mute,
    /// Proxies to the real broker.
    Proxy,
    /// Speaks MQTT 5 itself: accepts the session and answers every QoS 1 PUBLISH with a
    /// PUBACK whose reason code is 0x87 (not authorized) for topics containing
    /// `/telemetry/` and 0x00 otherwise, recording each in [`FakeBroker::publishes`]. This is
    /// what a broker with an ACL does per MQTT 5 §3.4.2.1 (mosquitto 2.0.11 also sends the
    /// 0x87 PUBACK but then drops the connection, so it cannot stand in here).
    Judge,
    /// Like [`Act::Judge`], but answers every PUBLISH with this reason code.
    JudgeAll(u8),
    /// Speaks MQTT (3.1.1 or 5, as the client's CONNECT asks) itself: accepts the session,
    /// answers PINGREQ, records every PUBLISH in [`FakeBroker::held`] and sends its PUBACK
    /// only when the test releases its packet id with [`FakeBroker::ack`].
    Hold,
}

/// A PUBLISH the holding broker received: on which connection (0 for the first), its
/// packet id (0 for QoS 0), topic and payload.
#[derive(Debug, Clone)]
pub struct Held {
    pub conn: usize,
    pub pkid: u16,
    pub topic: String,
    pub payload: serde_json::Value,
}

/// A PUBLISH the judging broker answered: topic, the reason code sent, the payload.
pub type Judged = (String, u8, serde_json::Value);

/// The scripted broker.
pub struct FakeBroker {
    /// Its port.
    pub port: u16,
    act: watch::Sender<Act>,
    /// When each connection arrived.
    pub accepted: Arc<Mutex<Vec<Instant>>>,
    /// Every PUBLISH answered in [`Act::Judge`] mode.
    pub publishes: Arc<Mutex<Vec<Judged>>>,
    /// Every PUBLISH received in [`Act::Hold`] mode, in arrival order.
    pub held: Arc<Mutex<Vec<Held>>>,
    acks: tokio::sync::broadcast::Sender<u16>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBroker {
    /// Listens on an ephemeral loopback port; proxies to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16, act: Act) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(act);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let publishes: Arc<Mutex<Vec<Judged>>> = Arc::default();
        let held: Arc<Mutex<Vec<Held>>> = Arc::default();
        let (acks, _) = tokio::sync::broadcast::channel(1024);
        let log = accepted.clone();
        let judged = publishes.clone();
        let hold = Holding {
            held: held.clone(),
            acks: acks.clone(),
        };
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let conn = {
                    let mut log = log.lock().unwrap();
                    log.push(Instant::now());
                    log.len() - 1
                };
                let hold = (conn, hold.clone());
                tokio::spawn(serve(s, upstream, rx.clone(), judged.clone(), hold));
            }
        });
        FakeBroker {
            port,
            act: tx,
            accepted,
            publishes,
            held,
            acks,
            task,
        }
    }

    /// The behaviour for new connections from now on.
    pub fn set(&self, act: Act) {
        self.act.send_replace(act);
    }

    /// Sends the PUBACK for `pkid` on every open [`Act::Hold`] connection.
    pub fn ack(&self, pkid: u16) {
        let _ = self.acks.send(pkid);
    }

    /// The packet id under which the event with this id was last received in hold mode.
    pub fn pkid_of(&self, event_id: &str) -> Option<u16> {
        self.held
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|h| h.payload["id"] == event_id)
            .map(|h| h.pkid)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    pub fn url(&self, tls: bool) -> String {
        let scheme = if tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`Act::Hold`] connections share with the test.
#[derive(Clone)]
struct Holding {
    held: Arc<Mutex<Vec<Held>>>,
    acks: tokio::sync::broadcast::Sender<u16>,
}

async fn serve(
    mut s: TcpStream,
    upstream: u16,
    mut act: watch::Receiver<Act>,
    judged: Arc<Mutex<Vec<Judged>>>,
    (conn, holding): (usize, Holding),
) {
    let now = *act.borrow_and_update();
    // Subscribed before the first read, so no release sent after the CONNECT is missed.
    let acks = holding.acks.subscribe();
    let mut first = vec![0u8; 4096];
    let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut first)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return,
    };
    first.truncate(n);
    match now {
        Act::HangUp => {}
        Act::Refuse(code) => {
            let _ = s.write_all(&connack(&first, code)).await;
            let _ = s.shutdown().await;
        }
        Act::Delay(d) => {
            // A client that gave up meanwhile must not reach the broker late (its CONNECT
            // would take over the live session of the same client id).
            let mut more = vec![0u8; 4096];
            let until = tokio::time::Instant::now() + d;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    r = s.read(&mut more) => match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => first.extend_from_slice(&more[..n]),
                    },
                }
            }
            proxy(s, first, upstream).await;
        }
        Act::Proxy => proxy(s, first, upstream).await,
        Act::Judge | Act::JudgeAll(_) => {
            let fixed = match now {
                Act::JudgeAll(c) => Some(c),
                _ => None,
            };
            let Some(rest) = packet_len(&first).map(|n| first.split_off(n)) else {
                return;
            };
            if s.write_all(&connack(&first, 0)).await.is_ok() {
                judge(s, rest, &judged, fixed).await;
            }
        }
        Act::Hold => {
            let v5 = level(&first) == Some(5);
            let Some(rest) = packet_len(&first).map(|n| first.split_off(n)) else {
                return;
            };
            if s.write_all(&connack(&first, 0)).await.is_ok() {
                hold(s, rest, v5, conn, &holding.held, acks).await;
            }
        }
        Act::Mute => {
            if s.write_all(&connack(&first, 0)).await.is_err() {
                return;
            }
            tokio::select! {
                () = swallow(&mut s) => {}
                _ = act.changed() => {}
            }
        }
    }
}

/// CONNACK for the protocol level in `connect` (MQTT 3.1.1 §3.1.2.2: byte 7 of a CONNECT
/// with a one-byte remaining length; 5 means MQTT 5, whose CONNACK carries properties).
fn connack(connect: &[u8], code: u8) -> Vec<u8> {
    let level = level(connect);
    if level == Some(5) {
        vec![0x20, 0x03, 0x00, code, 0x00]
    } else {
        vec![0x20, 0x02, 0x00, code]
    }
}

fn level(connect: &[u8]) -> Option<u8> {
    let mut i = 1;
    while *connect.get(i)? & 0x80 != 0 {
        i += 1;
    }
    // remaining length, then the protocol name "MQTT" (2-byte length + 4), then the level.
    connect.get(i + 1 + 6).copied()
}

/// Reads packets forever, answering PINGREQ (0xC0) with PINGRESP and nothing else.
async fn swallow(s: &mut TcpStream) {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A PINGREQ is two bytes and rarely shares a read with a publish; good enough to
        // keep rumqttc's keep-alive satisfied.
        if buf[..n].windows(2).any(|w| w == [0xC0, 0x00])
            && s.write_all(&[0xD0, 0x00]).await.is_err()
        {
            return;
        }
    }
}

async fn proxy(mut s: TcpStream, first: Vec<u8>, upstream: u16) {
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    if up.write_all(&first).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
}

/// Length of the first whole packet in `buf` (fixed header + remaining length), if complete.
fn packet_len(buf: &[u8]) -> Option<usize> {
    let (mut len, mut shift, mut i) = (0usize, 0u32, 1usize);
    loop {
        let b = *buf.get(i)?;
        len |= usize::from(b & 0x7F) << shift;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    (buf.len() >= i + len).then_some(i + len)
}

/// MQTT 5 session that judges each PUBLISH (see [`Act::Judge`]).
async fn judge(mut s: TcpStream, mut buf: Vec<u8>, judged: &Mutex<Vec<Judged>>, fixed: Option<u8>) {
    let mut chunk = vec![0u8; 65536];
    loop {
        while let Some(n) = packet_len(&buf) {
            let packet: Vec<u8> = buf.drain(..n).collect();
            let reply = match packet[0] >> 4 {
                3 => publish_ack(&packet, judged, fixed),
                12 => Some(vec![0xD0, 0x00]),
                14 => return,
                _ => None,
            };
            if let Some(r) = reply
                && s.write_all(&r).await.is_err()
            {
                return;
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Parses an MQTT 5 PUBLISH (§3.3) and builds its PUBACK (§3.4) with the judged reason.
fn publish_ack(p: &[u8], judged: &Mutex<Vec<Judged>>, fixed: Option<u8>) -> Option<Vec<u8>> {
    let qos = (p[0] >> 1) & 3;
    let mut i = 1;
    while p[i] & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tlen = usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
    let topic = String::from_utf8_lossy(&p[i + 2..i + 2 + tlen]).into_owned();
    i += 2 + tlen;
    let pid = (qos > 0).then(|| [p[i], p[i + 1]]);
    if qos > 0 {
        i += 2;
    }
    let (mut plen, mut shift) = (0usize, 0u32);
    loop {
        let b = p[i];
        i += 1;
        plen |= usize::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let payload = serde_json::from_slice(&p[i + plen..]).unwrap_or(serde_json::Value::Null);
    let rc = if let Some(c) = fixed {
        c
    } else if topic.contains("/telemetry/") {
        0x87
    } else {
        0x00
    };
    judged.lock().unwrap().push((topic, rc, payload));
    let [hi, lo] = pid?;
    Some(vec![0x40, 0x04, hi, lo, rc, 0x00])
}

/// MQTT session that records each PUBLISH and acknowledges it when released (see
/// [`Act::Hold`]).
async fn hold(
    s: TcpStream,
    mut buf: Vec<u8>,
    v5: bool,
    conn: usize,
    held: &Mutex<Vec<Held>>,
    mut acks: tokio::sync::broadcast::Receiver<u16>,
) {
    let (mut rd, mut wr) = s.into_split();
    let mut chunk = vec![0u8; 65536];
    loop {
        while let Some(n) = packet_len(&buf) {
            let packet: Vec<u8> = buf.drain(..n).collect();
            let reply = match packet[0] >> 4 {
                3 => {
                    if let Some(h) = parse_publish(&packet, v5, conn) {
                        held.lock().unwrap().push(h);
                    }
                    None
                }
                12 => Some(vec![0xD0, 0x00]),
                14 => return,
                _ => None,
            };
            if let Some(r) = reply
                && wr.write_all(&r).await.is_err()
            {
                return;
            }
        }
        tokio::select! {
            r = rd.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            pkid = acks.recv() => {
                let Ok(pkid) = pkid else { return };
                let [hi, lo] = pkid.to_be_bytes();
                // MQTT 5 §3.4.2.1: reason code 0x00 (success), no properties.
                let puback = if v5 { vec![0x40, 0x03, hi, lo, 0x00] } else { vec![0x40, 0x02, hi, lo] };
                if wr.write_all(&puback).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Parses a PUBLISH (MQTT 3.1.1 §3.3; MQTT 5 §3.3 adds properties before the payload).
fn parse_publish(p: &[u8], v5: bool, conn: usize) -> Option<Held> {
    let qos = (p.first()? >> 1) & 3;
    let mut i = 1;
    while p.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tlen = usize::from(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]));
    let topic = String::from_utf8_lossy(p.get(i + 2..i + 2 + tlen)?).into_owned();
    i += 2 + tlen;
    let mut pkid = 0;
    if qos > 0 {
        pkid = u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]);
        i += 2;
    }
    if v5 {
        let (mut plen, mut shift) = (0usize, 0u32);
        loop {
            let b = *p.get(i)?;
            i += 1;
            plen |= usize::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        i += plen;
    }
    let payload = serde_json::from_slice(p.get(i..)?).unwrap_or(serde_json::Value::Null);
    Some(Held {
        conn,
        pkid,
        topic,
        payload,
    })
}
