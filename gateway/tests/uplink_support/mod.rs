//! Test kit for the uplink tests: a real mosquitto on ephemeral loopback ports, rcgen
//! certificates, a recording subscriber, and a journal with an MQTT uplink on it.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

pub mod fake_broker;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use campusgw::journal::{Journal, JournalOptions, WriterHandle};
use campusgw::uplink::config::MqttConfig;
use campusgw::uplink::mqtt::MqttUplink;
use campusgw::uplink::{UplinkContext, UplinkSettings, UplinkStatus};
use campusgw_sdk::{Class, DeviceId, Event, FieldPath, Kind, Location, NewEvent};
use rumqttc::{AsyncClient, MqttOptions, Packet, QoS};
use tokio_util::sync::CancellationToken;

/// A port that was free a moment ago: bound on 127.0.0.1:0, read, released. Whoever binds
/// it next may lose a race with another process, so callers retry with a fresh port when
/// their peer cannot bind it (see [`Broker::start_with_acl`]).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The mosquitto executable: the first on the PATH, else Debian's /usr/sbin/mosquitto
/// (/usr/sbin is not on every user's PATH).
pub fn mosquitto() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

/// The value of the Prometheus sample `series` (name and labels exactly as rendered, e.g.
/// `campusgw_uplink_rejected_total{uplink="county"}`) in this process's `/metrics` text.
pub fn metric(series: &str) -> Option<f64> {
    campusgw::api::metrics_handle()
        .render()
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
}

/// Waits for `cond` with a deadline.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub other_ca: PathBuf,
    /// A server certificate from the test CA that expired in 2021.
    pub expired_server_cert: PathBuf,
    pub expired_server_key: PathBuf,
}

pub fn certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).unwrap();
        (cert, key)
    };
    let (ca_cert, ca_key) = ca("campusgw test ca");
    let (other, _) = ca("someone else's ca");
    let leaf = |cn: &str, server: bool| leaf_cert(cn, server, false, &ca_cert, &ca_key);
    let expired = leaf_cert("broker", true, true, &ca_cert, &ca_key);
    let (sc, sk) = leaf("broker", true);
    let (cc, ck) = leaf("school-042", false);
    // Key files are private: the gateway refuses keys others can read.
    let w = |n: &str, s: &str| {
        let p = dir.join(n);
        write_secret(&p, s);
        p
    };
    Certs {
        dir: dir.to_owned(),
        ca: w("ca.pem", &ca_cert.pem()),
        server_cert: w("server.pem", &sc),
        server_key: w("server.key", &sk),
        client_cert: w("client.pem", &cc),
        client_key: w("client.key", &ck),
        other_ca: w("other-ca.pem", &other.pem()),
        expired_server_cert: w("expired-server.pem", &expired.0),
        expired_server_key: w("expired-server.key", &expired.1),
    }
}

fn leaf_cert(
    cn: &str,
    server: bool,
    expired: bool,
    ca_cert: &rcgen::Certificate,
    ca_key: &rcgen::KeyPair,
) -> (String, String) {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    if server {
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    }
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    p.distinguished_name.push(DnType::CommonName, cn);
    let cert = p.signed_by(&key, ca_cert, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// mosquitto with a plain listener (for test subscribers) and optionally a TLS one.
pub struct Broker {
    child: Option<Child>,
    conf: PathBuf,
    pub plain: u16,
    pub tls: Option<u16>,
    _dir: tempfile::TempDir,
}

pub enum Tls<'a> {
    None,
    Server(&'a Certs),
    /// The TLS listener presents the expired server certificate.
    Expired(&'a Certs),
    Mutual(&'a Certs),
}

impl Broker {
    pub async fn start(tls: Tls<'_>) -> Broker {
        Broker::start_with_acl(tls, None).await
    }

    /// With an ACL for anonymous clients (mosquitto `acl_file` lines such as
    /// `topic read campusgw/#`). Ports are picked free; when mosquitto cannot bind them
    /// (another process took one meanwhile) it starts again on fresh ones.
    pub async fn start_with_acl(tls: Tls<'_>, acl: Option<&str>) -> Broker {
        for _ in 0..5 {
            let mut b = Broker::configure(&tls, acl);
            if b.launch().await {
                return b;
            }
            eprintln!("mosquitto could not bind its ports; retrying on fresh ones");
        }
        panic!(
            "mosquitto ({}) did not start in 5 attempts",
            mosquitto().display()
        );
    }

    /// Writes a config on fresh ports; nothing is started yet.
    fn configure(tls: &Tls<'_>, acl: Option<&str>) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let plain = free_port();
        let mut conf = format!(
            "user root\nper_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_queued_bytes 0\nlog_dest stderr\nlog_type error\nlistener {plain} 127.0.0.1\n",
            dir.path().display()
        );
        if let Some(acl) = acl {
            let path = dir.path().join("acl");
            std::fs::write(&path, acl).unwrap();
            conf.push_str(&format!("acl_file {}\n", path.display()));
        }
        let tls_port = match tls {
            Tls::None => None,
            Tls::Server(c) | Tls::Mutual(c) | Tls::Expired(c) => {
                let p = free_port();
                let (cert, key) = if matches!(tls, Tls::Expired(_)) {
                    (&c.expired_server_cert, &c.expired_server_key)
                } else {
                    (&c.server_cert, &c.server_key)
                };
                conf.push_str(&format!(
                    "listener {p} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                    c.ca.display(),
                    cert.display(),
                    key.display()
                ));
                if matches!(tls, Tls::Mutual(_)) {
                    conf.push_str("require_certificate true\n");
                }
                Some(p)
            }
        };
        let path = dir.path().join("mosquitto.conf");
        std::fs::write(&path, conf).unwrap();
        Broker {
            child: None,
            conf: path,
            plain,
            tls: tls_port,
            _dir: dir,
        }
    }

    /// Starts (again) with the same config and ports. The ports were this broker's a
    /// moment ago; should another process have taken one since, mosquitto is retried until
    /// the deadline.
    pub async fn restart(&mut self) {
        let end = Instant::now() + Duration::from_secs(20);
        while !self.launch().await {
            assert!(
                Instant::now() < end,
                "mosquitto could not bind its ports again"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Spawns mosquitto and waits until every listener accepts connections; false if it
    /// exited first (it exits when a listener cannot bind).
    async fn launch(&mut self) -> bool {
        let exe = mosquitto();
        let child = Command::new(&exe)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run mosquitto ({}): {e}; `scripts/test` installs it",
                    exe.display()
                )
            });
        let child = self.child.insert(child);
        let ports: Vec<u16> = std::iter::once(self.plain).chain(self.tls).collect();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            let up = ports
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return true;
            }
            assert!(Instant::now() < end, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the broker (SIGTERM: mosquitto saves its persistent sessions, so the test
    /// subscriber's queued messages survive; what the uplink had in flight is resent).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > end {
                    let _ = c.kill();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    pub fn plain_url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.plain)
    }

    pub fn tls_url(&self) -> String {
        format!("mqtts://127.0.0.1:{}", self.tls.unwrap())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A message as the test subscriber saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A persistent-session subscriber on the plain listener, recording every message.
pub struct Subscriber {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(port: u16, filter: &str) -> Subscriber {
        let mut o = MqttOptions::new(format!("sub-{}", uuid::Uuid::now_v7()), "127.0.0.1", port);
        o.set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 1024);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let s = seen.clone();
        let c = client.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(rumqttc::Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = subscribed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                        s.lock().unwrap().push(Seen {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        });
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
            .await
            .expect("subscribed in time")
            .unwrap();
        Subscriber { seen, client, task }
    }

    pub fn events(&self) -> Vec<(String, Event)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.contains("/events/"))
            .map(|m| (m.topic.clone(), serde_json::from_slice(&m.payload).unwrap()))
            .collect()
    }

    pub fn count_events(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.topic.contains("/events/"))
            .count()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A journal in a temp dir with one MQTT uplink running on it.
pub struct Rig {
    pub journal: Journal,
    writer: Option<WriterHandle>,
    pub status: Arc<UplinkStatus>,
    pub shutdown: CancellationToken,
    pub gw: DeviceId,
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

/// Parses `[[uplink]]` TOML into an MQTT config with test back-off.
pub fn mqtt_config(toml_text: &str) -> (MqttConfig, campusgw::uplink::Filter) {
    let v: toml::Value = toml::from_str(toml_text).unwrap();
    let u = match campusgw::uplink::parse(v, &FieldPath::root().key("uplink").index(0)) {
        Ok(u) => u,
        Err(e) => panic!("config refused: {e:?}"),
    };
    let UplinkSettings::Mqtt(c) = u.settings else {
        panic!("not mqtt")
    };
    let mut c = (*c).clone();
    c.backoff = (Duration::from_millis(100), Duration::from_millis(800));
    (c, u.filter)
}

impl Rig {
    pub fn open() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (journal, writer) =
            Journal::open(JournalOptions::new(dir.path().join("journal.db"))).unwrap();
        Rig {
            journal,
            writer: Some(writer),
            status: UplinkStatus::new("county", "mqtt"),
            shutdown: CancellationToken::new(),
            gw: DeviceId::new("school-042").unwrap(),
            task: None,
            dir,
        }
    }

    pub fn context(&self) -> UplinkContext {
        UplinkContext {
            journal: self.journal.clone(),
            gateway_id: self.gw.clone(),
            commands: None,
            drivers: None,
            shutdown: self.shutdown.clone(),
        }
    }

    pub fn start(&mut self, cfg: MqttConfig, filter: campusgw::uplink::Filter, cx: UplinkContext) {
        let up = MqttUplink::new(Arc::new(cfg), filter, cx, self.status.clone());
        self.adopt(tokio::spawn(up.run()));
    }

    /// Makes `task` (an uplink's run loop) this rig's: [`Rig::stop`] waits for it and fails
    /// the test if it panicked.
    pub fn adopt(&mut self, task: tokio::task::JoinHandle<()>) {
        assert!(self.task.is_none(), "one uplink task per rig");
        self.task = Some(task);
    }

    pub async fn emit(&self, class: Class, kind: &'static str, n: usize) -> Vec<Event> {
        let events: Vec<Event> = (0..n)
            .map(|i| {
                Event::stamp(
                    NewEvent::new(Kind::from_static(kind), class)
                        .payload(serde_json::json!({"i": i})),
                    &DeviceId::new("dev-1").unwrap(),
                    "test",
                    &Location::default(),
                )
            })
            .collect();
        let receipts = self.journal.append(events.clone()).await.unwrap();
        events
            .into_iter()
            .zip(receipts)
            .map(|(mut e, r)| {
                e.seq = r.seq;
                e
            })
            .collect()
    }

    /// Shuts the uplink down and closes the journal. A panicked uplink or writer, or an
    /// uplink that ignores shutdown, fails the test here.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.task.take() {
            let ended = tokio::time::timeout(Duration::from_secs(20), t).await;
            match ended.expect("the uplink stopped within 20 s of shutdown") {
                Ok(()) => {}
                // Re-raise the uplink's own panic so its message is the test's failure.
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("the uplink task did not finish: {e}"),
            }
        }
        self.journal.close().await;
        if let Some(w) = self.writer.take() {
            tokio::task::spawn_blocking(move || w.join())
                .await
                .expect("the journal writer did not panic");
        }
    }
}

/// Writes a file holding a secret with mode 0600 (the gateway refuses secret files that
/// others can read).
#[allow(dead_code)] // not every test binary that includes this module writes secrets
pub fn write_secret(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
