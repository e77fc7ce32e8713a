//! Opening a link for each kind and running single requests under their deadline.
//!
//! Only this module knows the three transports apart: Modbus TCP uses MBAP framing, the
//! two RTU kinds use address + PDU + CRC-16 framing over a serial port or a TCP socket.
//! After any transport fault the caller drops the [`Link`]: a late answer on a reused
//! link could be taken for the answer to the next request.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio_modbus::client::{Client, Context, rtu, tcp};
use tokio_modbus::{Request, Response, Slave};

use crate::codec::Table;
use crate::config::{Endpoint, Parity, SerialSettings};
use crate::error::ModbusError;

/// An open connection to one unit, every request bounded by `timeout`.
pub(crate) struct Link {
    ctx: Context,
    timeout: Duration,
}

/// Opens the link, bounded by `timeout`.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    unit: u8,
    timeout: Duration,
) -> Result<Link, ModbusError> {
    let fail = |source| ModbusError::Connect {
        endpoint: endpoint.to_string(),
        source,
    };
    let slave = Slave(unit);
    let open = async {
        match endpoint {
            Endpoint::Tcp(addr) => Ok(tcp::attach_slave(
                TcpStream::connect(addr.as_str()).await?,
                slave,
            )),
            Endpoint::RtuOverTcp(addr) => Ok(rtu::attach_slave(
                TcpStream::connect(addr.as_str()).await?,
                slave,
            )),
            Endpoint::Serial(s) => open_serial(s).map(|port| rtu::attach_slave(port, slave)),
        }
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(Ok(ctx)) => Ok(Link { ctx, timeout }),
        Ok(Err(e)) => Err(fail(e)),
        Err(_) => Err(fail(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        ))),
    }
}

fn open_serial(s: &SerialSettings) -> std::io::Result<tokio_serial::SerialStream> {
    use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};
    let parity = match s.parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    let data_bits = match s.data_bits {
        5 => DataBits::Five,
        6 => DataBits::Six,
        7 => DataBits::Seven,
        _ => DataBits::Eight,
    };
    let stop_bits = if s.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    tokio_serial::new(&s.path, s.baud)
        .parity(parity)
        .data_bits(data_bits)
        .stop_bits(stop_bits)
        .open_native_async()
        .map_err(std::io::Error::from)
}

impl Link {
    async fn call(&mut self, request: Request<'_>, label: &str) -> Result<Response, ModbusError> {
        match tokio::time::timeout(self.timeout, self.ctx.call(request)).await {
            Err(_) => Err(ModbusError::Timeout {
                request: label.to_owned(),
                timeout: self.timeout,
            }),
            Ok(Err(e)) => Err(ModbusError::from_transport(label.to_owned(), e)),
            Ok(Ok(Err(code))) => Err(ModbusError::exception(label.to_owned(), code)),
            Ok(Ok(Ok(response))) => Ok(response),
        }
    }

    /// Reads `count` coils or discrete inputs from `start`.
    pub(crate) async fn read_bits(
        &mut self,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Vec<bool>, ModbusError> {
        let label = format!("read {} {start}+{count}", table.as_str());
        let request = match table {
            Table::Coil => Request::ReadCoils(start, count),
            _ => Request::ReadDiscreteInputs(start, count),
        };
        match self.call(request, &label).await? {
            Response::ReadCoils(bits) | Response::ReadDiscreteInputs(bits)
                if bits.len() >= usize::from(count) =>
            {
                Ok(bits)
            }
            other => Err(ModbusError::Framing {
                request: label,
                detail: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Reads `count` holding or input registers from `start`.
    pub(crate) async fn read_words(
        &mut self,
        table: Table,
        start: u16,
        count: u16,
    ) -> Result<Vec<u16>, ModbusError> {
        let label = format!("read {} {start}+{count}", table.as_str());
        let request = match table {
            Table::HoldingRegister => Request::ReadHoldingRegisters(start, count),
            _ => Request::ReadInputRegisters(start, count),
        };
        match self.call(request, &label).await? {
            Response::ReadHoldingRegisters(w) | Response::ReadInputRegisters(w)
                if w.len() == usize::from(count) =>
            {
                Ok(w)
            }
            other => Err(ModbusError::Framing {
                request: label,
                detail: format!("unexpected answer {other:?}"),
            }),
        }
    }

    /// Writes one coil (function 0x05).
    pub(crate) async fn write_coil(&mut self, address: u16, on: bool) -> Result<(), ModbusError> {
        let label = format!("write coil {address}");
        self.call(Request::WriteSingleCoil(address, on), &label)
            .await
            .map(drop)
    }

    /// Writes registers: one with 0x06, more with 0x10 so a 32-bit value changes at once.
    pub(crate) async fn write_words(
        &mut self,
        address: u16,
        words: &[u16],
    ) -> Result<(), ModbusError> {
        let label = format!("write holding_register {address}+{}", words.len());
        let request = match words {
            [w] => Request::WriteSingleRegister(address, *w),
            _ => Request::WriteMultipleRegisters(address, words.to_vec().into()),
        };
        self.call(request, &label).await.map(drop)
    }
}
