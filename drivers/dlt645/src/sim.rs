//! A bus of DL/T 645-2007 meters behind a simulated serial server, for tests and demos.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use campusgw_dlt645::sim::{Behaviour, BusSim};
//! let bus = BusSim::start(9600).await?;            // 127.0.0.1:<ephemeral>
//! let m = bus.add_meter("000102030425");           // energy, power, voltages... preset
//! bus.set_behaviour(m, Behaviour::Silent);         // a meter whose cable is cut
//! let address = bus.local_addr().to_string();      // `address` of a dlt645 config
//! # Ok(()) }
//! ```
//!
//! The serial line is simulated: an exchange takes as long as its bytes need at the
//! configured baud rate (11 bits per byte: start, 8 data, parity, stop) plus the meter's
//! turnaround, and the server handles one request at a time, as a half-duplex bus does.
//! Each read of `00010000` (forward active energy) adds 0.01 kWh, so a meter's energy
//! moves every cycle.
//!
//! Misbehaviour, per meter ([`Behaviour`]): silent, slow, error answers (`D1H`), garbage
//! instead of an answer, half an answer, a bad checksum, an answer from another address;
//! and for the whole bus: echo of every request ([`BusSim::set_echo`]), as an RS-485
//! adapter without echo suppression does. `13H` to the wildcard is answered when exactly
//! one meter is on the bus; `08H` broadcasts are recorded ([`BusSim::time_syncs`]);
//! [`BusSim::drop_connections`] closes the link as a rebooting serial server does.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::codec::{Address, Control, Decoder, Frame, Function};
use crate::ids;

/// How one simulated meter answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Answers every read.
    #[default]
    Normal,
    /// Never answers.
    Silent,
    /// Answers after this extra delay.
    Slow(Duration),
    /// Answers every read with `D1H` and this error byte.
    ErrorAnswer(u8),
    /// Sends bytes that are no frame instead of answering.
    Garbage,
    /// Sends the first half of its answer only.
    HalfFrame,
    /// Answers with a wrong checksum.
    BadChecksum,
    /// Answers as if it had another address.
    WrongAddress,
}

#[derive(Debug, Default)]
struct SimMeter {
    values: HashMap<u32, f64>,
    behaviour: Behaviour,
    requests: u64,
    answered: u64,
}

#[derive(Default)]
struct State {
    meters: BTreeMap<Address, SimMeter>,
    time_syncs: Vec<Vec<u8>>,
}

struct Shared {
    state: Mutex<State>,
    echo: AtomicBool,
    connections: AtomicU64,
    kill: Mutex<CancellationToken>,
    byte_time: Duration,
    turnaround: Duration,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // a poisoned lock only means a test thread panicked mid-update
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The simulated bus. Dropping it stops the server.
pub struct BusSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for BusSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The values a new meter starts with.
const PRESET: [(&str, f64); 8] = [
    ("energy_active_forward_total", 1206.42),
    ("energy_active_reverse_total", 1.26),
    ("voltage_a", 220.1),
    ("current_a", 5.123),
    ("power_active_total", 1.1275),
    ("power_factor_total", 0.998),
    ("frequency", 50.01),
    ("power_reactive_total", -0.0123),
];

impl BusSim {
    /// A bus at `baud` on 127.0.0.1 with a 20 ms meter turnaround.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start(baud: u32) -> io::Result<BusSim> {
        Self::start_with(baud, Duration::from_millis(20)).await
    }

    /// A bus at `baud` whose meters answer `turnaround` after a request ended.
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start_with(baud: u32, turnaround: Duration) -> io::Result<BusSim> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            echo: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            kill: Mutex::new(CancellationToken::new()),
            byte_time: Duration::from_secs_f64(11.0 / f64::from(baud.max(1))),
            turnaround,
        });
        let stop = CancellationToken::new();
        let (s, token) = (shared.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let conn = tokio::select! {
                    () = token.cancelled() => return,
                    c = listener.accept() => c,
                };
                let Ok((stream, _)) = conn else { continue };
                s.connections.fetch_add(1, Ordering::Relaxed);
                let kill = s
                    .kill
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                let (s, token) = (s.clone(), token.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = kill.cancelled() => {}
                        _ = serve(stream, s) => {}
                    }
                });
            }
        });
        Ok(BusSim { addr, shared, stop })
    }

    /// The serial server's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds a meter with the preset values; returns its address.
    ///
    /// # Panics
    /// If `address` is not 1-12 decimal digits (a test bug).
    pub fn add_meter(&self, address: &str) -> Address {
        let a: Address = address.parse().expect("a valid meter address");
        let mut m = SimMeter::default();
        for (name, v) in PRESET {
            if let Some(q) = ids::by_name(name) {
                m.values.insert(q.id, v);
            }
        }
        self.shared.state().meters.insert(a, m);
        a
    }

    /// Sets a value by point name (e.g. a counter that restarted at 0).
    pub fn set_value(&self, meter: Address, point: &str, v: f64) {
        if let (Some(q), Some(m)) = (
            ids::by_name(point),
            self.shared.state().meters.get_mut(&meter),
        ) {
            m.values.insert(q.id, v);
        }
    }

    /// A meter's current value of `point`.
    pub fn value(&self, meter: Address, point: &str) -> Option<f64> {
        let q = ids::by_name(point)?;
        self.shared
            .state()
            .meters
            .get(&meter)?
            .values
            .get(&q.id)
            .copied()
    }

    /// Changes how a meter answers.
    pub fn set_behaviour(&self, meter: Address, b: Behaviour) {
        if let Some(m) = self.shared.state().meters.get_mut(&meter) {
            m.behaviour = b;
        }
    }

    /// Makes the bus echo every request back (a half-duplex adapter hearing itself).
    pub fn set_echo(&self, on: bool) {
        self.shared.echo.store(on, Ordering::Relaxed);
    }

    /// Closes every open connection now (the serial server rebooting); it keeps listening.
    pub fn drop_connections(&self) {
        let mut k = self
            .shared
            .kill
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        k.cancel();
        *k = CancellationToken::new();
    }

    /// Connections the serial server accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Requests addressed to a meter so far.
    pub fn requests_to(&self, meter: Address) -> u64 {
        self.shared
            .state()
            .meters
            .get(&meter)
            .map_or(0, |m| m.requests)
    }

    /// Valid answers a meter sent so far.
    pub fn answered(&self, meter: Address) -> u64 {
        self.shared
            .state()
            .meters
            .get(&meter)
            .map_or(0, |m| m.answered)
    }

    /// The data of every `08H` broadcast received (BCD `ss mm hh DD MM YY`).
    pub fn time_syncs(&self) -> Vec<Vec<u8>> {
        self.shared.state().time_syncs.clone()
    }
}

async fn serve(mut stream: TcpStream, s: Arc<Shared>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        decoder.push(&buf[..n]);
        while let Some(r) = decoder.next_frame() {
            let Ok(frame) = r else { continue };
            if frame.control.from_meter() {
                continue;
            }
            let wire_len = frame.encode(0).len();
            if s.echo.load(Ordering::Relaxed) {
                stream.write_all(&frame.encode(0)).await?;
            }
            let (answer, delay) = respond(&s, &frame);
            let Some(answer) = answer else {
                // the request still occupied the line
                tokio::time::sleep(s.byte_time * u32::try_from(wire_len).unwrap_or(u32::MAX)).await;
                continue;
            };
            let line = s.byte_time * u32::try_from(wire_len + answer.len()).unwrap_or(u32::MAX);
            tokio::time::sleep(line + s.turnaround + delay).await;
            stream.write_all(&answer).await?;
        }
    }
}

/// The bytes a request gets (none for silence and broadcasts) and any extra delay.
fn respond(s: &Shared, req: &Frame) -> (Option<Vec<u8>>, Duration) {
    let mut st = s.state();
    match req.control.function() {
        Function::BroadcastTime if req.address == Address::BROADCAST => {
            st.time_syncs.push(req.data.clone());
            (None, Duration::ZERO)
        }
        Function::ReadAddress if req.address == Address::WILDCARD => {
            if st.meters.len() != 1 {
                // every meter answers at once: what reaches the master is noise
                return (Some(vec![0x68, 0x13, 0xE7, 0x00, 0x68]), Duration::ZERO);
            }
            let Some((a, m)) = st.meters.iter_mut().next() else {
                return (None, Duration::ZERO);
            };
            m.requests += 1;
            if m.behaviour == Behaviour::Silent {
                return (None, Duration::ZERO);
            }
            m.answered += 1;
            let f = Frame::new(*a, Control::answer(Function::ReadAddress), a.0.to_vec());
            (Some(f.encode(0)), Duration::ZERO)
        }
        Function::ReadData => read(&mut st, req),
        _ => (None, Duration::ZERO),
    }
}

fn read(st: &mut State, req: &Frame) -> (Option<Vec<u8>>, Duration) {
    let key = if req.address == Address::WILDCARD && st.meters.len() == 1 {
        st.meters.keys().next().copied()
    } else {
        Some(req.address)
    };
    let Some(m) = key.and_then(|k| st.meters.get_mut(&k)) else {
        return (None, Duration::ZERO);
    };
    m.requests += 1;
    let Some(id) = req.data.first_chunk::<4>().map(|d| u32::from_le_bytes(*d)) else {
        return (None, Duration::ZERO);
    };
    let address = key.unwrap_or(req.address);
    let value = ids::by_id(id).and_then(|q| {
        let v = m.values.get(&id).copied()?;
        if q.name == "energy_active_forward_total" {
            m.values.insert(id, ((v + 0.01) * 100.0).round() / 100.0);
        }
        q.encode(v)
    });
    let normal = match value {
        Some(bytes) => {
            let mut data = id.to_le_bytes().to_vec();
            data.extend(bytes);
            Frame::new(address, Control::answer(Function::ReadData), data)
        }
        // DL/T 645-2007 error byte bit 1: no requested data
        None => Frame::new(address, Control::error(Function::ReadData), vec![0x02]),
    };
    let mut delay = Duration::ZERO;
    let wire = match m.behaviour {
        Behaviour::Normal => normal.encode(0),
        Behaviour::Silent => return (None, delay),
        Behaviour::Slow(d) => {
            delay = d;
            normal.encode(0)
        }
        Behaviour::ErrorAnswer(b) => {
            Frame::new(address, Control::error(Function::ReadData), vec![b]).encode(0)
        }
        Behaviour::Garbage => vec![0x00, 0xFF, 0x68, 0x12, 0x34, 0x16, 0x68, 0x68, 0x99, 0x01],
        Behaviour::HalfFrame => {
            let w = normal.encode(0);
            w[..w.len() / 2].to_vec()
        }
        Behaviour::BadChecksum => {
            let mut w = normal.encode(0);
            let n = w.len();
            w[n - 2] = w[n - 2].wrapping_add(1);
            w
        }
        Behaviour::WrongAddress => {
            let mut other = address;
            other.0[0] = other.0[0].wrapping_add(1);
            Frame::new(other, normal.control, normal.data.clone()).encode(0)
        }
    };
    if matches!(m.behaviour, Behaviour::Normal | Behaviour::Slow(_)) {
        m.answered += 1;
    }
    (Some(wire), delay)
}
