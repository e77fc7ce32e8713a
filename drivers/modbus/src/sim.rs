//! A scriptable Modbus device for tests and `campusgw demo`, built on tokio-modbus's server.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use campusgw_modbus::sim::Simulator;
//! let sim = Simulator::start().await?;          // Modbus TCP on 127.0.0.1:<ephemeral>
//! sim.set_discrete_input(3, true);              // the fire panel's alarm output
//! let address = sim.local_addr().to_string();   // put this in a modbus_tcp config
//! # Ok(()) }
//! ```
//!
//! All 65536 addresses of the four tables exist and read as 0 / off until set; unit ids
//! are ignored. Besides plain data the device can misbehave, as field devices do:
//! - [`Simulator::set_exception`]: any request touching an address gets an exception;
//! - [`Simulator::set_silent`]: requests are read but never answered (connections are
//!   still accepted);
//! - [`Simulator::set_garbage`]: answers are replaced by bytes of `0xFF` (bad framing);
//! - [`Simulator::drop_connections`]: every open connection is closed now.
//!
//! Dropping the [`Simulator`] stops it and closes its connections.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::codec::{Table, WordOrder};

/// Which register table an `f32` helper addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterTable {
    /// Holding registers (read/write).
    Holding,
    /// Input registers (read-only for clients).
    Input,
}

/// How the simulator frames its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Tcp,
    RtuOverTcp,
}

#[derive(Default)]
struct Data {
    coils: HashMap<u16, bool>,
    discrete: HashMap<u16, bool>,
    holding: HashMap<u16, u16>,
    input: HashMap<u16, u16>,
    exceptions: HashMap<(Table, u16), u8>,
}

struct Shared {
    data: Mutex<Data>,
    silent: AtomicBool,
    garbage: AtomicBool,
    kill: Mutex<CancellationToken>,
    requests: AtomicU64,
    connections: AtomicU64,
}

impl Shared {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        // A poisoned lock only means a test thread panicked mid-update; the maps stay usable.
        self.data
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn kill_token(&self) -> CancellationToken {
        self.kill
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A running simulated Modbus device.
pub struct Simulator {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Starts a Modbus TCP device on `127.0.0.1` with an ephemeral port. It runs as a task
    /// on the current Tokio runtime until the returned handle is dropped.
    ///
    /// # Errors
    /// If the listener cannot be bound.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub async fn start() -> io::Result<Simulator> {
        Simulator::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Starts a Modbus TCP device on `addr` (e.g. a fixed port for a demo).
    ///
    /// # Errors
    /// If the listener cannot be bound.
    ///
    /// # Panics
    /// When called outside a Tokio runtime.
    pub async fn bind(addr: SocketAddr) -> io::Result<Simulator> {
        Simulator::spawn(addr, Framing::Tcp).await
    }

    /// Starts a device speaking RTU framing over TCP (like a serial server with one
    /// device behind it) on `127.0.0.1` with an ephemeral port.
    ///
    /// # Errors
    /// If the listener cannot be bound.
    pub async fn start_rtu_over_tcp() -> io::Result<Simulator> {
        Simulator::spawn(SocketAddr::from(([127, 0, 0, 1], 0)), Framing::RtuOverTcp).await
    }

    async fn spawn(addr: SocketAddr, framing: Framing) -> io::Result<Simulator> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            data: Mutex::default(),
            silent: AtomicBool::new(false),
            garbage: AtomicBool::new(false),
            kill: Mutex::new(CancellationToken::new()),
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve(listener, framing, shared.clone()));
        Ok(Simulator {
            shared,
            local_addr,
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets a coil.
    pub fn set_coil(&self, address: u16, on: bool) {
        self.shared.data().coils.insert(address, on);
    }

    /// A coil's state (as last set by a test or written by a client).
    pub fn coil(&self, address: u16) -> bool {
        self.shared
            .data()
            .coils
            .get(&address)
            .copied()
            .unwrap_or(false)
    }

    /// Sets a discrete input.
    pub fn set_discrete_input(&self, address: u16, on: bool) {
        self.shared.data().discrete.insert(address, on);
    }

    /// A discrete input's state.
    pub fn discrete_input(&self, address: u16) -> bool {
        self.shared
            .data()
            .discrete
            .get(&address)
            .copied()
            .unwrap_or(false)
    }

    /// Sets a holding register.
    pub fn set_holding_register(&self, address: u16, value: u16) {
        self.shared.data().holding.insert(address, value);
    }

    /// A holding register's value (as last set by a test or written by a client).
    pub fn holding_register(&self, address: u16) -> u16 {
        self.shared
            .data()
            .holding
            .get(&address)
            .copied()
            .unwrap_or(0)
    }

    /// Sets an input register.
    pub fn set_input_register(&self, address: u16, value: u16) {
        self.shared.data().input.insert(address, value);
    }

    /// An input register's value.
    pub fn input_register(&self, address: u16) -> u16 {
        self.shared.data().input.get(&address).copied().unwrap_or(0)
    }

    /// Stores an IEEE 754 `f32` in two registers at `address` and `address + 1` (wrapping
    /// at 65535), in `order`.
    pub fn set_f32(&self, table: RegisterTable, address: u16, value: f32, order: WordOrder) {
        let bits = value.to_bits();
        let (hi, lo) = ((bits >> 16) as u16, (bits & 0xFFFF) as u16);
        let (first, second) = if order == WordOrder::Big {
            (hi, lo)
        } else {
            (lo, hi)
        };
        let mut data = self.shared.data();
        let map = match table {
            RegisterTable::Holding => &mut data.holding,
            RegisterTable::Input => &mut data.input,
        };
        map.insert(address, first);
        map.insert(address.wrapping_add(1), second);
    }

    /// Reads an `f32` stored at `address` and `address + 1` in `order`.
    pub fn f32(&self, table: RegisterTable, address: u16, order: WordOrder) -> f32 {
        let data = self.shared.data();
        let map = match table {
            RegisterTable::Holding => &data.holding,
            RegisterTable::Input => &data.input,
        };
        let first = map.get(&address).copied().unwrap_or(0);
        let second = map.get(&address.wrapping_add(1)).copied().unwrap_or(0);
        let (hi, lo) = if order == WordOrder::Big {
            (first, second)
        } else {
            (second, first)
        };
        f32::from_bits((u32::from(hi) << 16) | u32::from(lo))
    }

    /// Makes every request that touches `address` of `table` fail with exception `code`
    /// (e.g. 2, illegal data address; 4, server device failure); `None` heals it.
    pub fn set_exception(&self, table: Table, address: u16, code: Option<u8>) {
        let mut data = self.shared.data();
        match code {
            Some(c) => data.exceptions.insert((table, address), c),
            None => data.exceptions.remove(&(table, address)),
        };
    }

    /// Silent: requests are received but never answered. Turning silence off affects
    /// requests that arrive afterwards.
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// Garbage: every answer is replaced by as many `0xFF` bytes.
    pub fn set_garbage(&self, garbage: bool) {
        self.shared.garbage.store(garbage, Ordering::SeqCst);
    }

    /// Closes every open connection now; new ones are accepted as usual.
    pub fn drop_connections(&self) {
        let mut kill = self
            .shared
            .kill
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = std::mem::replace(&mut *kill, CancellationToken::new());
        old.cancel();
    }

    /// Requests received so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.kill_token().cancel();
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, framing: Framing, shared: Arc<Shared>) {
    let on_connected = |stream: TcpStream, _peer: SocketAddr| {
        let shared = shared.clone();
        async move {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let kill = shared.kill_token();
            let stream = SimStream {
                inner: stream,
                killed: Box::pin(kill.clone().cancelled_owned()),
                shared: shared.clone(),
            };
            Ok(Some((SimService { shared, kill }, stream)))
        }
    };
    let on_error = |err: io::Error| tracing::debug!(error = %err, "simulator connection ended");
    let result = match framing {
        Framing::Tcp => {
            tokio_modbus::server::tcp::Server::new(listener)
                .serve(&on_connected, on_error)
                .await
        }
        Framing::RtuOverTcp => {
            tokio_modbus::server::rtu_over_tcp::Server::new(listener)
                .serve(&on_connected, on_error)
                .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "modbus simulator stopped");
    }
}

struct SimService {
    shared: Arc<Shared>,
    kill: CancellationToken,
}

type Answer = Result<Response, ExceptionCode>;

impl tokio_modbus::server::Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Answer> + Send>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        self.shared.requests.fetch_add(1, Ordering::SeqCst);
        if self.shared.silent.load(Ordering::SeqCst) {
            // Never answer; give up only when this connection is closed.
            let kill = self.kill.clone();
            return Box::pin(async move {
                kill.cancelled().await;
                Err(ExceptionCode::ServerDeviceFailure)
            });
        }
        let answer = answer(&mut self.shared.data(), req.request);
        Box::pin(std::future::ready(answer))
    }
}

/// Modbus Application Protocol V1.1b3 §6: quantity limits per function.
fn check_range(
    data: &Data,
    table: Table,
    start: u16,
    count: usize,
    max: usize,
) -> Result<(), ExceptionCode> {
    if count == 0 || count > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    if usize::from(start) + count > 65536 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    let hit = (0..count).find_map(|i| data.exceptions.get(&(table, start.wrapping_add(i as u16))));
    match hit {
        Some(&code) => Err(ExceptionCode::new(code)),
        None => Ok(()),
    }
}

fn read_bits(map: &HashMap<u16, bool>, start: u16, count: u16) -> Vec<bool> {
    (0..count)
        .map(|i| map.get(&start.wrapping_add(i)).copied().unwrap_or(false))
        .collect()
}

fn read_words(map: &HashMap<u16, u16>, start: u16, count: u16) -> Vec<u16> {
    (0..count)
        .map(|i| map.get(&start.wrapping_add(i)).copied().unwrap_or(0))
        .collect()
}

fn answer(data: &mut Data, request: Request<'static>) -> Answer {
    use Table::*;
    match request {
        Request::ReadCoils(a, n) => {
            check_range(data, Coil, a, n.into(), 2000)?;
            Ok(Response::ReadCoils(read_bits(&data.coils, a, n)))
        }
        Request::ReadDiscreteInputs(a, n) => {
            check_range(data, DiscreteInput, a, n.into(), 2000)?;
            Ok(Response::ReadDiscreteInputs(read_bits(
                &data.discrete,
                a,
                n,
            )))
        }
        Request::ReadHoldingRegisters(a, n) => {
            check_range(data, HoldingRegister, a, n.into(), 125)?;
            Ok(Response::ReadHoldingRegisters(read_words(
                &data.holding,
                a,
                n,
            )))
        }
        Request::ReadInputRegisters(a, n) => {
            check_range(data, InputRegister, a, n.into(), 125)?;
            Ok(Response::ReadInputRegisters(read_words(&data.input, a, n)))
        }
        Request::WriteSingleCoil(a, v) => {
            check_range(data, Coil, a, 1, 1)?;
            data.coils.insert(a, v);
            Ok(Response::WriteSingleCoil(a, v))
        }
        Request::WriteMultipleCoils(a, vs) => {
            check_range(data, Coil, a, vs.len(), 1968)?;
            for (i, v) in vs.iter().enumerate() {
                data.coils.insert(a.wrapping_add(i as u16), *v);
            }
            Ok(Response::WriteMultipleCoils(a, vs.len() as u16))
        }
        Request::WriteSingleRegister(a, w) => {
            check_range(data, HoldingRegister, a, 1, 1)?;
            data.holding.insert(a, w);
            Ok(Response::WriteSingleRegister(a, w))
        }
        Request::WriteMultipleRegisters(a, ws) => {
            check_range(data, HoldingRegister, a, ws.len(), 123)?;
            for (i, w) in ws.iter().enumerate() {
                data.holding.insert(a.wrapping_add(i as u16), *w);
            }
            Ok(Response::WriteMultipleRegisters(a, ws.len() as u16))
        }
        _ => Err(ExceptionCode::IllegalFunction),
    }
}

/// A connection that [`Simulator::drop_connections`] can close and
/// [`Simulator::set_garbage`] can corrupt.
struct SimStream {
    inner: TcpStream,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
    shared: Arc<Shared>,
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Ok(())); // end of stream: the server closes the connection
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.killed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.shared.garbage.load(Ordering::SeqCst) {
            let junk = vec![0xFF; buf.len()];
            return Pin::new(&mut this.inner).poll_write(cx, &junk);
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
