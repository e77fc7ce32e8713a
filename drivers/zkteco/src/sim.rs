//! A simulated ZKTeco Security PUSH controller, for tests, benchmarks and `campusgw demo`.
//!
//! It does what a controller does: handshakes (`GET /iclock/cdata?SN=&options=all`) and
//! takes `RequestDelay` from the answer, polls `getrequest` every `RequestDelay`, executes
//! `CONTROL DEVICE` commands on its doors and posts each result to `devicecmd`, and uploads
//! `rtlog` / `rtstate` lines, keeping every line the server did not answer `OK` and resending
//! it with the next poll (a controller's offline buffer).
//!
//! Door model: a door is remotely locked or not (`06dd01..` / `06dd00..`), and its lock output
//! is normal, open for N s, or normal-open (`01dd01ss`, `ff`; `00` off). An open while
//! remotely locked is refused with `Return=-3`, so the order of the driver's commands matters
//! as on a device. `door_state(n)`: `locked`, `normal_open`, `open` or `normal`.
//!
//! Misbehaviour ([`Misbehaviour`]): go silent (no polls, no uploads), disconnect mid-command
//! (fetch the commands over a raw TCP connection and close it before the answer is read,
//! never executing or answering them), answer every command with a failing `Return`, post
//! garbage ([`ControllerSim::post_raw`]), and restart ([`ControllerSim::restart`]: the log
//! index starts again at 1, the controller handshakes again and forgets what it was doing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::proto;

/// How to start a simulated controller.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The iclock server, `http://127.0.0.1:port`.
    pub server: String,
    /// The serial number it reports.
    pub sn: String,
    /// Doors 1..=doors.
    pub doors: u8,
    /// Poll interval when the handshake gives no `RequestDelay` (a controller's default 30 s
    /// is the firmware's; tests keep it short).
    pub default_delay: Duration,
}

impl SimConfig {
    /// A controller `sn` with 4 doors talking to `server`.
    pub fn new(server: impl Into<String>, sn: impl Into<String>) -> SimConfig {
        SimConfig {
            server: server.into(),
            sn: sn.into(),
            doors: 4,
            default_delay: Duration::from_secs(30),
        }
    }

    /// With `n` doors.
    pub fn doors(mut self, n: u8) -> SimConfig {
        self.doors = n;
        self
    }
}

/// What the simulated controller does wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misbehaviour {
    /// No polls and no uploads (as if unplugged).
    pub silent: bool,
    /// Fetch commands, then drop the connection mid-answer and never execute or answer them.
    pub drop_mid_command: bool,
    /// Answer every command with this `Return` without executing it.
    pub fail_return: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Normal,
    Open,
    NormalOpen,
}

#[derive(Debug, Clone, Copy)]
struct Door {
    locked: bool,
    output: Output,
}

struct Shared {
    cfg: SimConfig,
    doors: Mutex<Vec<Door>>,
    index: AtomicU64,
    /// rtlog lines not yet acknowledged.
    backlog: Mutex<Vec<String>>,
    misbehaviour: Mutex<Misbehaviour>,
    delay: Mutex<Duration>,
    executed: AtomicU64,
    polls: AtomicU64,
    handshakes: AtomicU64,
    restart: Notify,
    changed: Notify,
}

/// A running simulated controller; stops when dropped.
pub struct ControllerSim {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for ControllerSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ControllerSim {
    /// Starts the controller: it handshakes, then polls on its own.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub async fn start(cfg: SimConfig) -> Result<ControllerSim, String> {
        if !cfg.server.starts_with("http://") {
            return Err(format!("{}: the simulator speaks http:// only", cfg.server));
        }
        let doors = vec![
            Door {
                locked: false,
                output: Output::Normal,
            };
            usize::from(cfg.doors)
        ];
        let delay = cfg.default_delay;
        let shared = Arc::new(Shared {
            cfg,
            doors: Mutex::new(doors),
            index: AtomicU64::new(0),
            backlog: Mutex::new(Vec::new()),
            misbehaviour: Mutex::new(Misbehaviour::default()),
            delay: Mutex::new(delay),
            executed: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            restart: Notify::new(),
            changed: Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(run(shared.clone(), stop.clone()));
        Ok(ControllerSim { shared, stop })
    }

    /// Its serial number.
    pub fn sn(&self) -> &str {
        &self.shared.cfg.sn
    }

    /// Sets the misbehaviour.
    pub fn misbehave(&self, m: Misbehaviour) {
        if let Ok(mut g) = self.shared.misbehaviour.lock() {
            *g = m;
        }
    }

    /// Reboots: the log index restarts at 1, it handshakes again.
    pub fn restart(&self) {
        self.shared.index.store(0, Ordering::SeqCst);
        self.shared.restart.notify_one();
    }

    /// The state of door `n` (1-based).
    pub fn door_state(&self, n: u8) -> Option<String> {
        let doors = self.shared.doors.lock().ok()?;
        doors.get(usize::from(n).checked_sub(1)?).map(|d| {
            if d.locked {
                "locked"
            } else {
                match d.output {
                    Output::NormalOpen => "normal_open",
                    Output::Open => "open",
                    Output::Normal => "normal",
                }
            }
            .to_owned()
        })
    }

    /// Every door's state.
    pub fn door_states(&self) -> Vec<String> {
        (1..=self.shared.cfg.doors)
            .filter_map(|n| self.door_state(n))
            .collect()
    }

    /// Commands executed so far.
    pub fn executed(&self) -> u64 {
        self.shared.executed.load(Ordering::SeqCst)
    }

    /// Polls so far.
    pub fn polls(&self) -> u64 {
        self.shared.polls.load(Ordering::SeqCst)
    }

    /// Handshakes so far.
    pub fn handshakes(&self) -> u64 {
        self.shared.handshakes.load(Ordering::SeqCst)
    }

    /// The poll interval in use (the handshake's `RequestDelay`).
    pub fn request_delay(&self) -> Duration {
        self.shared.delay.lock().map(|d| *d).unwrap_or_default()
    }

    /// rtlog lines still waiting for an `OK`.
    pub fn backlog(&self) -> usize {
        self.shared.backlog.lock().map(|b| b.len()).unwrap_or(0)
    }

    /// Waits until the handshake has been answered.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.shared.changed.notified();
            if self.handshakes() > 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return self.handshakes() > 0;
            }
        }
    }

    /// An access event on `door` (`event` code, `pin`, `inout` 0 in / 1 out), uploaded now;
    /// the HTTP status of the upload (0 when the server was unreachable). An upload that is
    /// not `200` stays in the backlog and is resent with each poll.
    pub async fn access(&self, door: u8, event: u32, pin: &str, inout: u8) -> u16 {
        let i = self.shared.index.fetch_add(1, Ordering::SeqCst) + 1;
        let time = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S");
        let line = format!(
            "time={time}\tpin={pin}\tcardno=0\tsitecode=0\tlinkid=0\teventaddr={door}\tevent={event}\tinoutstatus={inout}\tverifytype=4\tindex={i}"
        );
        self.upload_line("rtlog", line).await
    }

    /// An rtstate line (`sensor`, `alarm` as the controller sends them, hex), uploaded now.
    pub async fn rtstate(&self, sensor: &str, alarm: &str) -> u16 {
        let time = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S");
        let body = format!("time={time}\tsensor={sensor}\trelay=00\talarm={alarm}\tdoor=00\n");
        self.shared.post("cdata", "rtstate", body).await.0
    }

    async fn upload_line(&self, table: &str, line: String) -> u16 {
        if self.misbehaving().silent {
            push_backlog(&self.shared, line);
            return 0;
        }
        let (status, _) = self.shared.post("cdata", table, format!("{line}\n")).await;
        if status != 200 {
            push_backlog(&self.shared, line);
        }
        status
    }

    /// Posts `body` to `/iclock/<path>?SN=<sn>[&table=..]` as given (garbage, oversized, a
    /// forged serial via [`ControllerSim::post_as`]); the HTTP status (0: unreachable).
    pub async fn post_raw(&self, path: &str, table: &str, body: Vec<u8>) -> u16 {
        self.shared
            .post_bytes(&self.shared.cfg.sn, path, table, body)
            .await
            .0
    }

    /// As [`ControllerSim::post_raw`] with another serial number.
    pub async fn post_as(&self, sn: &str, path: &str, table: &str, body: Vec<u8>) -> (u16, String) {
        self.shared.post_bytes(sn, path, table, body).await
    }

    fn misbehaving(&self) -> Misbehaviour {
        self.shared
            .misbehaviour
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

fn push_backlog(s: &Shared, line: String) {
    if let Ok(mut b) = s.backlog.lock()
        && b.len() < 100_000
    {
        b.push(line);
    }
}

impl Shared {
    fn url(&self, sn: &str, path: &str, table: &str) -> String {
        let t = if table.is_empty() {
            String::new()
        } else {
            format!("&table={table}")
        };
        format!("{}/iclock/{path}?SN={sn}{t}", self.cfg.server)
    }

    async fn post(&self, path: &str, table: &str, body: String) -> (u16, String) {
        self.post_bytes(&self.cfg.sn, path, table, body.into_bytes())
            .await
    }

    async fn post_bytes(&self, sn: &str, path: &str, table: &str, body: Vec<u8>) -> (u16, String) {
        self.request("POST", &self.url(sn, path, table), &body)
            .await
    }

    /// One HTTP/1.1 exchange on its own connection (`Connection: close`), as the controllers'
    /// firmware does it: (status, body); (0, "") when the server is unreachable or the answer
    /// is not HTTP. Hand-written so the simulator needs no TLS stack (it is plain http to
    /// loopback by design) and can also break an exchange halfway ([`Shared::poll_and_drop`]).
    async fn request(&self, method: &str, url: &str, body: &[u8]) -> (u16, String) {
        let exchange = async {
            let rest = url.strip_prefix("http://")?;
            let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let mut s = tokio::net::TcpStream::connect(hostport).await.ok()?;
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nUser-Agent: iClock Proxy/1.09\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            s.write_all(head.as_bytes()).await.ok()?;
            s.write_all(body).await.ok()?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.ok()?;
            let text = String::from_utf8_lossy(&buf);
            let (head, body) = text.split_once("\r\n\r\n")?;
            let status = head.split(' ').nth(1)?.parse().ok()?;
            Some((status, body.to_owned()))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .ok()
            .flatten()
            .unwrap_or((0, String::new()))
    }

    fn misbehaviour(&self) -> Misbehaviour {
        self.misbehaviour
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    async fn handshake(&self) -> bool {
        let url = format!(
            "{}/iclock/cdata?SN={}&options=all&pushver=3.1.2&language=83",
            self.cfg.server, self.cfg.sn
        );
        let (status, body) = self.request("GET", &url, b"").await;
        if status != 200 {
            return false;
        }
        let opts = proto::parse_options(&body);
        if let Some(d) = opts.get("RequestDelay").and_then(|v| v.parse::<u64>().ok())
            && let Ok(mut g) = self.delay.lock()
        {
            *g = Duration::from_secs(d.max(1));
        }
        self.handshakes.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        true
    }

    /// Resends the backlog in one upload.
    async fn flush(&self) {
        let lines: Vec<String> = self.backlog.lock().map(|b| b.clone()).unwrap_or_default();
        if lines.is_empty() {
            return;
        }
        let body = lines.join("\n") + "\n";
        let (status, _) = self.post("cdata", "rtlog", body).await;
        if status == 200
            && let Ok(mut b) = self.backlog.lock()
        {
            let n = lines.len().min(b.len());
            b.drain(..n);
        }
    }

    /// The commands of one poll, fetched over a raw connection that is closed before the
    /// answer is read in full.
    async fn poll_and_drop(&self) {
        let Some(hostport) = self.cfg.server.strip_prefix("http://") else {
            return;
        };
        let Ok(mut s) = tokio::net::TcpStream::connect(hostport).await else {
            return;
        };
        let req = format!(
            "GET /iclock/getrequest?SN={} HTTP/1.1\r\nHost: {hostport}\r\n\r\n",
            self.cfg.sn
        );
        if s.write_all(req.as_bytes()).await.is_ok() {
            let mut buf = [0u8; 16];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
        }
        // Dropped here: the rest of the answer is never read, nothing is executed.
    }

    async fn poll(&self) {
        let m = self.misbehaviour();
        if m.drop_mid_command {
            self.poll_and_drop().await;
            self.polls.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let (status, body) = self
            .request("GET", &self.url(&self.cfg.sn, "getrequest", ""), b"")
            .await;
        if status != 200 {
            return;
        }
        self.polls.fetch_add(1, Ordering::SeqCst);
        let mut results = String::new();
        for line in body.lines() {
            // A bare command without C:<id>: is dropped, as by real controllers.
            let Some((id, cmd)) = proto::parse_command_line(line.trim()) else {
                continue;
            };
            let ret = match m.fail_return {
                Some(r) => r,
                None => self.execute(cmd),
            };
            let name = cmd.split(' ').take(2).collect::<Vec<_>>().join(" ");
            results.push_str(&format!("ID={id}&Return={ret}&CMD={name}\n"));
        }
        if !results.is_empty() {
            let _ = self.post("devicecmd", "", results).await;
            self.changed.notify_waiters();
        }
    }

    fn execute(&self, cmd: &str) -> i64 {
        let Some(c) = proto::parse_control(cmd) else {
            return -1;
        };
        let Ok(mut doors) = self.doors.lock() else {
            return -1;
        };
        let range: Vec<usize> = if c.door == 0 {
            (0..doors.len()).collect()
        } else if usize::from(c.door) <= doors.len() {
            vec![usize::from(c.door) - 1]
        } else {
            return -2;
        };
        for i in &range {
            let d = &mut doors[*i];
            match (c.op, c.target, c.value) {
                (1, 1, 0) => d.output = Output::Normal,
                (1, 1, _) if d.locked => return -3,
                (1, 1, 0xFF) => d.output = Output::NormalOpen,
                (1, 1, _) => d.output = Output::Open,
                (6, 1, _) => d.locked = true,
                (6, 0, _) => d.locked = false,
                (2..=4, _, _) => {}
                _ => return -1,
            }
        }
        self.executed.fetch_add(1, Ordering::SeqCst);
        0
    }
}

async fn run(s: Arc<Shared>, stop: CancellationToken) {
    loop {
        // Handshake until answered.
        loop {
            if stop.is_cancelled() {
                return;
            }
            if !s.misbehaviour().silent && s.handshake().await {
                break;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        loop {
            let delay = s.delay.lock().map(|d| *d).unwrap_or(Duration::from_secs(1));
            tokio::select! {
                () = stop.cancelled() => return,
                () = s.restart.notified() => break,
                () = tokio::time::sleep(delay) => {}
            }
            if s.misbehaviour().silent {
                continue;
            }
            s.flush().await;
            s.poll().await;
        }
    }
}
