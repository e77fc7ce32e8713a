//! The bus: opening the link and one request/answer exchange at a time.
//!
//! An exchange writes one request and reads until the answer to *that* request arrives or
//! the deadline passes. Everything else read meanwhile is rejected and reported to the
//! caller: torn or garbled frames ([`Reject`]), the echo of our own request (half-duplex
//! adapters hear themselves), frames from another address (a late answer of a meter that
//! timed out earlier) and answers to another function or data identifier. None of these
//! ends the link; only an I/O error or the peer closing it does.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::codec::{Address, Decoder, Frame, Function, ReadAnswer, Reject};
use crate::config::{Link, Parity};

/// A byte stream to the bus.
pub(crate) trait Port: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Port for T {}

/// Why a received frame was not the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    /// Not a frame.
    Frame(Reject),
    /// Our own request, heard back.
    Echo,
    /// A meter answered that was not asked.
    WrongAddress,
    /// A frame from the master side, or an answer to another function or identifier.
    Unexpected,
}

impl Rejected {
    /// The counter label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Rejected::Frame(r) => r.label(),
            Rejected::Echo => "echo",
            Rejected::WrongAddress => "wrong_address",
            Rejected::Unexpected => "unexpected",
        }
    }
}

/// An open bus.
pub(crate) struct Bus {
    port: Box<dyn Port>,
    decoder: Decoder,
    preamble: usize,
}

/// Opens the link, bounded by `timeout`.
pub(crate) async fn open(link: &Link, timeout: Duration, preamble: usize) -> io::Result<Bus> {
    let open = async {
        let port: Box<dyn Port> = match link {
            Link::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str()).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Link::Serial { path, baud, parity } => Box::new(open_serial(path, *baud, *parity)?),
        };
        Ok::<_, io::Error>(port)
    };
    let port = tokio::time::timeout(timeout, open).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("link not open within {timeout:?}"),
        )
    })??;
    Ok(Bus {
        port,
        decoder: Decoder::new(),
        preamble,
    })
}

fn open_serial(path: &str, baud: u32, parity: Parity) -> io::Result<tokio_serial::SerialStream> {
    use tokio_serial::{DataBits, SerialPortBuilderExt, StopBits};
    let parity = match parity {
        Parity::None => tokio_serial::Parity::None,
        Parity::Even => tokio_serial::Parity::Even,
        Parity::Odd => tokio_serial::Parity::Odd,
    };
    tokio_serial::new(path, baud)
        .parity(parity)
        .data_bits(DataBits::Eight)
        .stop_bits(StopBits::One)
        .open_native_async()
        .map_err(io::Error::from)
}

impl Bus {
    /// Sends a frame that gets no answer (broadcast).
    pub(crate) async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        self.port.write_all(&frame.encode(self.preamble)).await?;
        self.port.flush().await
    }

    /// Sends `request` and waits up to `timeout` for its answer (function `f`); `None`
    /// when none came. Frames rejected on the way are appended to `rejected`.
    ///
    /// # Errors
    /// I/O errors and the peer closing the link: the caller drops the bus.
    pub(crate) async fn exchange(
        &mut self,
        request: &Frame,
        f: Function,
        timeout: Duration,
        rejected: &mut Vec<Rejected>,
    ) -> io::Result<Option<Frame>> {
        // bytes of an earlier exchange are not this answer's beginning
        self.decoder.clear();
        self.send(request).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 512];
        loop {
            while let Some(r) = self.decoder.next_frame() {
                match r {
                    Err(e) => rejected.push(Rejected::Frame(e)),
                    Ok(frame) => match judge(request, f, &frame) {
                        Ok(()) => return Ok(Some(frame)),
                        Err(why) => rejected.push(why),
                    },
                }
            }
            match tokio::time::timeout_at(deadline, self.port.read(&mut buf)).await {
                Err(_) => {
                    if let Some(r) = self.decoder.finish() {
                        rejected.push(Rejected::Frame(r));
                    }
                    return Ok(None);
                }
                Ok(Ok(0)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the serial server closed the connection",
                    ));
                }
                Ok(Ok(n)) => self.decoder.push(&buf[..n]),
                Ok(Err(e)) => return Err(e),
            }
        }
    }
}

/// Whether `frame` answers `request`.
fn judge(request: &Frame, f: Function, frame: &Frame) -> Result<(), Rejected> {
    if !frame.control.from_meter() {
        return Err(if frame == request {
            Rejected::Echo
        } else {
            Rejected::Unexpected
        });
    }
    if frame.control.function() != f {
        return Err(Rejected::Unexpected);
    }
    if request.address != Address::WILDCARD && frame.address != request.address {
        return Err(Rejected::WrongAddress);
    }
    if f == Function::ReadData {
        let asked = request
            .data
            .first_chunk::<4>()
            .map(|d| u32::from_le_bytes(*d));
        if let Ok(ReadAnswer::Data { id, .. }) = frame.read_answer()
            && Some(id) != asked
        {
            return Err(Rejected::Unexpected);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::Control;

    #[test]
    fn only_the_asked_meter_answering_the_asked_identifier_is_the_answer() {
        let a: Address = "1".parse().unwrap();
        let b: Address = "2".parse().unwrap();
        let req = Frame::read_data(a, 0x0001_0000);
        let ok = Frame::new(a, Control(0x91), vec![0, 0, 1, 0, 1, 2, 3, 4]);
        assert_eq!(judge(&req, Function::ReadData, &ok), Ok(()));
        assert_eq!(judge(&req, Function::ReadData, &req), Err(Rejected::Echo));
        let other = Frame::new(b, Control(0x91), ok.data.clone());
        assert_eq!(
            judge(&req, Function::ReadData, &other),
            Err(Rejected::WrongAddress)
        );
        let stale = Frame::new(a, Control(0x91), vec![0, 1, 3, 2, 1, 2, 3]);
        assert_eq!(
            judge(&req, Function::ReadData, &stale),
            Err(Rejected::Unexpected)
        );
        let err = Frame::new(a, Control(0xD1), vec![0x02]);
        assert_eq!(judge(&req, Function::ReadData, &err), Ok(()));
    }
}
