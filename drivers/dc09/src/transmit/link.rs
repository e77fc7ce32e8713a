//! One connection to one receiver (TCP stream or connected UDP socket): connect with a
//! deadline, write a frame, read the next frame before a deadline.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use crate::driver::next_frame;
use crate::frame::MAX_FRAME_LEN;
use crate::transmit::AttemptError;
use crate::transmit::config::{Endpoint, Transport};

/// An open link and the address it reached.
pub(crate) struct Link {
    kind: LinkKind,
    /// The resolved address.
    pub peer: SocketAddr,
    /// Whether a frame was already sent on it (a reused TCP connection may have been
    /// closed by the receiver while idle).
    pub used: bool,
}

enum LinkKind {
    Tcp(TcpStream, Vec<u8>),
    Udp(UdpSocket),
}

fn io_err(e: &io::Error) -> AttemptError {
    AttemptError::Io(e.to_string())
}

impl Link {
    /// Resolves `endpoint` and connects (TCP) or binds and connects a socket (UDP), all
    /// within `timeout`.
    pub async fn open(
        endpoint: &Endpoint,
        transport: Transport,
        timeout: Duration,
    ) -> Result<Link, AttemptError> {
        let deadline = Instant::now() + timeout;
        let addrs: Vec<SocketAddr> = match endpoint {
            Endpoint::Addr(a) => vec![*a],
            Endpoint::Host { host, port } => {
                match tokio::time::timeout_at(
                    deadline,
                    tokio::net::lookup_host((host.as_str(), *port)),
                )
                .await
                {
                    Err(_) => return Err(AttemptError::ConnectTimeout),
                    Ok(Err(e)) => return Err(AttemptError::Resolve(e.to_string())),
                    Ok(Ok(a)) => a.collect(),
                }
            }
        };
        let mut last = AttemptError::Resolve("the name has no address".into());
        for addr in addrs {
            match Link::open_addr(addr, transport, deadline).await {
                Ok(link) => return Ok(link),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn open_addr(
        addr: SocketAddr,
        transport: Transport,
        deadline: Instant,
    ) -> Result<Link, AttemptError> {
        let kind = match transport {
            Transport::Tcp => {
                let s = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                    Err(_) => return Err(AttemptError::ConnectTimeout),
                    Ok(Err(e)) => return Err(AttemptError::Connect(e.to_string())),
                    Ok(Ok(s)) => s,
                };
                // Alarm frames are small and latency matters more than packet count.
                let _ = s.set_nodelay(true);
                LinkKind::Tcp(s, Vec::with_capacity(256))
            }
            Transport::Udp => {
                let local: SocketAddr = if addr.is_ipv4() {
                    (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local).await.map_err(|e| io_err(&e))?;
                s.connect(addr)
                    .await
                    .map_err(|e| AttemptError::Connect(e.to_string()))?;
                LinkKind::Udp(s)
            }
        };
        Ok(Link {
            kind,
            peer: addr,
            used: false,
        })
    }

    /// Writes one frame before `deadline`.
    pub async fn write(&mut self, frame: &[u8], deadline: Instant) -> Result<(), AttemptError> {
        self.used = true;
        let w = match &mut self.kind {
            LinkKind::Tcp(s, _) => tokio::time::timeout_at(deadline, s.write_all(frame)).await,
            LinkKind::Udp(s) => {
                tokio::time::timeout_at(deadline, async { s.send(frame).await.map(|_| ()) }).await
            }
        };
        match w {
            Err(_) => Err(AttemptError::Timeout),
            Ok(Err(e)) => Err(io_err(&e)),
            Ok(Ok(())) => Ok(()),
        }
    }

    /// The next frame (TCP: `<LF>...<CR>` out of the stream; UDP: one datagram).
    pub async fn read(&mut self, deadline: Instant) -> Result<Vec<u8>, AttemptError> {
        match &mut self.kind {
            LinkKind::Tcp(s, buf) => loop {
                if let Some(f) = next_frame(buf) {
                    return Ok(f);
                }
                let mut chunk = [0u8; 1024];
                match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
                    Err(_) => return Err(AttemptError::Timeout),
                    Ok(Ok(0)) => return Err(AttemptError::Closed),
                    Ok(Ok(n)) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
                    Ok(Err(e)) => return Err(io_err(&e)),
                }
            },
            LinkKind::Udp(s) => {
                let mut buf = vec![0u8; MAX_FRAME_LEN + 64];
                match tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
                    Err(_) => Err(AttemptError::Timeout),
                    Ok(Ok(n)) => {
                        buf.truncate(n);
                        Ok(buf)
                    }
                    // ICMP port unreachable surfaces here as ConnectionRefused.
                    Ok(Err(e)) => Err(io_err(&e)),
                }
            }
        }
    }
}
