//! A scripted broker on `127.0.0.1:0` that misbehaves on purpose (rumqtt's reliability tests
//! against a scripted broker): it hangs up during the handshake, refuses the client id,
//! answers slowly, withholds PUBACKs, or behaves by proxying byte for byte to a real
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
}

/// The scripted broker.
pub struct FakeBroker {
    /// Its port.
    pub port: u16,
    act: watch::Sender<Act>,
    /// When each connection arrived.
    pub accepted: Arc<Mutex<Vec<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeBroker {
    /// Listens on an ephemeral loopback port; proxies to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16, act: Act) -> FakeBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(act);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let log = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                log.lock().unwrap().push(Instant::now());
                tokio::spawn(serve(s, upstream, rx.clone()));
            }
        });
        FakeBroker {
            port,
            act: tx,
            accepted,
            task,
        }
    }

    /// The behaviour for new connections from now on.
    pub fn set(&self, act: Act) {
        self.act.send_replace(act);
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

async fn serve(mut s: TcpStream, upstream: u16, mut act: watch::Receiver<Act>) {
    let now = *act.borrow_and_update();
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
