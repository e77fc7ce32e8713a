//! The two rumqttc clients (MQTT 3.1.1 and MQTT 5) behind one small interface, so the
//! session logic in [`super::mqtt`] is written once.
//!
//! Each protocol has its own options builder and event pump; both pumps translate rumqttc's
//! events into [`LinkEvent`] and its errors into a [`RetryReason`] with an operator-facing
//! message. The pump runs the event loop in its own task (never cancelled mid-write) and
//! ends after the first error.
//!
//! MQTT 5 features used (and only these):
//! - session expiry interval [`SESSION_EXPIRY`] with `clean_start = false`: the session
//!   (the commands subscription and its queued QoS 1 messages) survives reconnects;
//! - `content_type = "application/json"` and payload format indicator 1 (UTF-8) on every
//!   publish (events, status, replies, the will);
//! - PUBACK reason codes, passed on in [`LinkEvent::Acked`] and judged by
//!   [`super::delivery::puback_answer`]: only 0x99 (payload format invalid) rejects an
//!   event; 0x87 not authorized, 0x97 quota exceeded and the other failure codes are link
//!   trouble, retried;
//! - CONNACK and DISCONNECT reason codes, named in errors (a CONNACK refusing credentials
//!   is reason `auth`, [`super::delivery::connack_reason`]).
//!
//! Not used: message expiry, topic aliases, user properties, request/response, shared
//! subscriptions, enhanced authentication.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5 as m5;
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use tokio::sync::mpsc;

use super::config::MqttProtocol;
use super::delivery::{RetryReason, connack_reason};
use super::tls::classify;

/// MQTT 5 §3.1.2.11.2: the session lasts this long (seconds) after a disconnect: a day,
/// far beyond any reconnect back-off; commands are time-windowed anyway.
pub const SESSION_EXPIRY: u32 = 86_400;

/// A failure: the metric label and the message for the log and `/healthz`.
pub type Failure = (RetryReason, String);

/// What the session loop learns from the client, the same for both protocols.
#[derive(Debug)]
pub enum LinkEvent {
    /// CONNACK accepted.
    Connected,
    /// The event loop wrote the next queued publish under this packet id (0 for QoS 0).
    Sent(u16),
    /// PUBACK with its reason code (always 0 for MQTT 3.1.1).
    Acked {
        /// Packet id.
        pkid: u16,
        /// MQTT 5 §3.4.2.1 reason code.
        code: u8,
        /// The code's name and the broker's reason string, for messages.
        detail: String,
    },
    /// A message on a subscribed topic.
    Message {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// Our DISCONNECT went out.
    DisconnectSent,
    /// Anything else (pings, SUBACK).
    Other,
}

/// How to reach the broker, protocol-neutral.
pub struct LinkOptions {
    /// Protocol version.
    pub protocol: MqttProtocol,
    /// Client id.
    pub client_id: String,
    /// Broker host and port.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// In-flight window.
    pub inflight: u16,
    /// Last will: retained QoS 1 on this topic.
    pub will: (String, Vec<u8>),
    /// Username and password.
    pub credentials: Option<(String, String)>,
    /// TLS when `Some`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A client of either protocol.
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(m5::AsyncClient),
}

/// Queued-request capacity beyond the window: control publishes and subscriptions.
const EXTRA_REQUESTS: usize = 64;

/// Starts a client and its event pump; events (and the one final error) arrive on the
/// returned channel.
pub fn start(
    o: LinkOptions,
) -> (
    Client,
    mpsc::Receiver<Result<LinkEvent, Failure>>,
    tokio::task::JoinHandle<()>,
) {
    let cap = usize::from(o.inflight) + EXTRA_REQUESTS;
    let (tx, rx) = mpsc::channel(1024);
    let transport = o
        .tls
        .clone()
        .map(|c| Transport::tls_with_config(TlsConfiguration::Rustls(c)));
    match o.protocol {
        MqttProtocol::V311 => {
            let mut m = rumqttc::MqttOptions::new(o.client_id, o.host, o.port);
            m.set_keep_alive(o.keep_alive)
                .set_clean_session(false)
                .set_inflight(o.inflight)
                .set_max_packet_size(1 << 20, 1 << 20)
                .set_last_will(rumqttc::LastWill::new(
                    o.will.0,
                    o.will.1,
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            if let Some((u, p)) = o.credentials {
                m.set_credentials(u, p);
            }
            if let Some(t) = transport {
                m.set_transport(t);
            }
            let (client, el) = rumqttc::AsyncClient::new(m, cap);
            (Client::V311(client), rx, tokio::spawn(pump_v311(el, tx)))
        }
        MqttProtocol::V5 => {
            let mut m = m5::MqttOptions::new(o.client_id, o.host, o.port);
            let will = m5::mqttbytes::v5::LastWill::new(
                o.will.0,
                o.will.1,
                m5::mqttbytes::QoS::AtLeastOnce,
                true,
                Some(m5::mqttbytes::v5::LastWillProperties {
                    delay_interval: None,
                    payload_format_indicator: Some(1),
                    message_expiry_interval: None,
                    content_type: Some(JSON.to_owned()),
                    response_topic: None,
                    correlation_data: None,
                    user_properties: Vec::new(),
                }),
            );
            m.set_keep_alive(o.keep_alive)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(SESSION_EXPIRY))
                .set_outgoing_inflight_upper_limit(o.inflight)
                .set_max_packet_size(Some(1 << 20))
                .set_last_will(will);
            if let Some((u, p)) = o.credentials {
                m.set_credentials(u, p);
            }
            if let Some(t) = transport {
                m.set_transport(t);
            }
            let (client, el) = m5::AsyncClient::new(m, cap);
            (Client::V5(client), rx, tokio::spawn(pump_v5(el, tx)))
        }
    }
}

const JSON: &str = "application/json";

impl Client {
    /// Queues a QoS 1 publish without waiting.
    ///
    /// # Errors
    /// The request queue is full or closed.
    pub fn publish(&self, topic: String, retain: bool, payload: Vec<u8>) -> Result<(), String> {
        let r = match self {
            Client::V311(c) => c
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let props = m5::mqttbytes::v5::PublishProperties {
                    content_type: Some(JSON.to_owned()),
                    payload_format_indicator: Some(1),
                    ..Default::default()
                };
                c.try_publish_with_properties(
                    topic,
                    m5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                    props,
                )
                .map_err(|e| e.to_string())
            }
        };
        r.map_err(|e| format!("cannot queue publish: {e}"))
    }

    /// Subscribes at QoS 1 without waiting.
    ///
    /// # Errors
    /// The request queue is full or closed.
    pub fn subscribe(&self, filter: String) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, rumqttc::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, m5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues a DISCONNECT.
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

async fn pump_v311(mut el: rumqttc::EventLoop, tx: mpsc::Sender<Result<LinkEvent, Failure>>) {
    use rumqttc::{Event, Packet};
    loop {
        let r = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(LinkEvent::Connected),
            Ok(Event::Incoming(Packet::PubAck(a))) => Ok(LinkEvent::Acked {
                pkid: a.pkid,
                code: 0,
                detail: String::new(),
            }),
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(LinkEvent::Message {
                topic: p.topic,
                payload: p.payload.to_vec(),
            }),
            Ok(Event::Outgoing(o)) => Ok(outgoing(o)),
            Ok(_) => Ok(LinkEvent::Other),
            Err(e) => Err(failure_v311(&e)),
        };
        let stop = r.is_err();
        if tx.send(r).await.is_err() || stop {
            return;
        }
    }
}

async fn pump_v5(mut el: m5::EventLoop, tx: mpsc::Sender<Result<LinkEvent, Failure>>) {
    use m5::Event;
    use m5::mqttbytes::v5::Packet;
    loop {
        let r = match el.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(LinkEvent::Connected),
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                let (code, detail) = puback_code(&a);
                Ok(LinkEvent::Acked {
                    pkid: a.pkid,
                    code,
                    detail,
                })
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Ok(LinkEvent::Message {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload.to_vec(),
            }),
            Ok(Event::Outgoing(o)) => Ok(outgoing(o)),
            Ok(_) => Ok(LinkEvent::Other),
            Err(e) => Err(failure_v5(&e)),
        };
        let stop = r.is_err();
        if tx.send(r).await.is_err() || stop {
            return;
        }
    }
}

fn outgoing(o: Outgoing) -> LinkEvent {
    match o {
        Outgoing::Publish(pkid) => LinkEvent::Sent(pkid),
        Outgoing::Disconnect => LinkEvent::DisconnectSent,
        _ => LinkEvent::Other,
    }
}

/// An MQTT 5 PUBACK's reason code and a description with the broker's reason string.
fn puback_code(a: &m5::mqttbytes::v5::PubAck) -> (u8, String) {
    use m5::mqttbytes::v5::PubAckReason as R;
    let code: u8 = match a.reason {
        R::Success => 0x00,
        R::NoMatchingSubscribers => 0x10,
        R::UnspecifiedError => 0x80,
        R::ImplementationSpecificError => 0x83,
        R::NotAuthorized => 0x87,
        R::TopicNameInvalid => 0x90,
        R::PacketIdentifierInUse => 0x91,
        R::QuotaExceeded => 0x97,
        R::PayloadFormatInvalid => 0x99,
    };
    let reason = a
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.clone())
        .map(|s| format!(": {s}"))
        .unwrap_or_default();
    (
        code,
        format!("PUBACK reason 0x{code:02x} {:?}{reason}", a.reason),
    )
}

/// MQTT 5 §3.2.2.2: the numeric CONNACK reason code.
fn connack_code_v5(c: m5::mqttbytes::v5::ConnectReturnCode) -> u8 {
    use m5::mqttbytes::v5::ConnectReturnCode as C;
    match c {
        C::Success => 0x00,
        C::RefusedProtocolVersion => 0x84,
        C::BadClientId => 0x85,
        C::ServiceUnavailable => 0x88,
        C::UnspecifiedError => 0x80,
        C::MalformedPacket => 0x81,
        C::ProtocolError => 0x82,
        C::ImplementationSpecificError => 0x83,
        C::UnsupportedProtocolVersion => 0x84,
        C::ClientIdentifierNotValid => 0x85,
        C::BadUserNamePassword => 0x86,
        C::NotAuthorized => 0x87,
        C::ServerUnavailable => 0x88,
        C::ServerBusy => 0x89,
        C::Banned => 0x8A,
        C::BadAuthenticationMethod => 0x8C,
        C::TopicNameInvalid => 0x90,
        C::PacketTooLarge => 0x95,
        C::QuotaExceeded => 0x97,
        C::PayloadFormatInvalid => 0x99,
        C::RetainNotSupported => 0x9A,
        C::QoSNotSupported => 0x9B,
        C::UseAnotherServer => 0x9C,
        C::ServerMoved => 0x9D,
        C::ConnectionRateExceeded => 0x9F,
    }
}

fn failure_v311(e: &rumqttc::ConnectionError) -> Failure {
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => {
            // MQTT 3.1.1 §3.2.2.3, table 3.1.
            let name = match code {
                rumqttc::ConnectReturnCode::Success => "accepted",
                rumqttc::ConnectReturnCode::RefusedProtocolVersion => {
                    "unacceptable protocol version"
                }
                rumqttc::ConnectReturnCode::BadClientId => "identifier rejected",
                rumqttc::ConnectReturnCode::ServiceUnavailable => "server unavailable",
                rumqttc::ConnectReturnCode::BadUserNamePassword => "bad user name or password",
                rumqttc::ConnectReturnCode::NotAuthorized => "not authorized",
            };
            (
                connack_reason(*code as u8, false),
                format!(
                    "broker refused the connection: CONNACK return code {} {name} ({code:?})",
                    *code as u8
                ),
            )
        }
        E::NetworkTimeout => (RetryReason::Network, handshake_timeout()),
        E::Tls(_) => {
            classify(e).unwrap_or_else(|| (RetryReason::Tls, format!("tls handshake failed: {e}")))
        }
        _ => classify(e).unwrap_or_else(|| (RetryReason::Network, network(e))),
    }
}

fn failure_v5(e: &m5::ConnectionError) -> Failure {
    use m5::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => {
            let n = connack_code_v5(*code);
            (
                connack_reason(n, true),
                format!("broker refused the connection: CONNACK reason 0x{n:02x} {code:?}"),
            )
        }
        E::Timeout(_) => (RetryReason::Network, handshake_timeout()),
        E::Tls(_) => {
            classify(e).unwrap_or_else(|| (RetryReason::Tls, format!("tls handshake failed: {e}")))
        }
        _ => classify(e).unwrap_or_else(|| (RetryReason::Network, network(e))),
    }
}

fn handshake_timeout() -> String {
    "no CONNACK from the broker within the connection timeout (5 s for tcp, tls and mqtt \
     handshakes)"
        .to_owned()
}

fn network(e: &dyn std::error::Error) -> String {
    e.to_string()
}
