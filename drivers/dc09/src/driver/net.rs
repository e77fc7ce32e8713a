//! The two transports: TCP (a stream of frames per connection) and UDP (a frame per
//! datagram). Both hand each frame to [`Shared::handle`] and write back its reply.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{Backoff, DeviceHealth, DriverContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::{Dc09Driver, Shared, observe};
use crate::frame::MAX_FRAME_LEN;

/// A connection with no frame for this long is closed (panels reconnect per event or keep
/// the link with NULLs well inside this).
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A reply not written within this closes the connection (a peer that never reads).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// UDP datagrams being handled at once; more wait in the socket buffer.
const UDP_IN_FLIGHT: usize = 64;

/// Binds the configured sockets, retrying with back-off; `None` at shutdown.
pub(super) async fn bind(
    d: &Dc09Driver,
    cx: &DriverContext,
) -> Option<(Option<TcpListener>, Option<UdpSocket>)> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let tcp = match d.tcp {
            Some(a) => TcpListener::bind(a)
                .await
                .map(Some)
                .map_err(|e| ("tcp", a, e)),
            None => Ok(None),
        };
        let udp = match d.udp {
            Some(a) => UdpSocket::bind(a)
                .await
                .map(Some)
                .map_err(|e| ("udp", a, e)),
            None => Ok(None),
        };
        match (tcp, udp) {
            (Ok(t), Ok(u)) => {
                for (proto, addr) in [
                    ("tcp", t.as_ref().and_then(|l| l.local_addr().ok())),
                    ("udp", u.as_ref().and_then(|s| s.local_addr().ok())),
                ] {
                    if let Some(a) = addr {
                        observe::listening(proto, a);
                    }
                }
                return Some((t, u));
            }
            (Err((proto, a, e)), _) | (_, Err((proto, a, e))) => {
                observe::bind_failed(proto, a, &e);
                cx.report_health(
                    cx.device(),
                    DeviceHealth::Offline(format!("cannot listen on {proto} {a}: {e}")),
                );
                if !cx.sleep(backoff.next_delay()).await {
                    return None;
                }
            }
        }
    }
}

/// Receives datagrams until shutdown; each is handled in its own task (bounded), so one
/// slow journal commit does not hold the others.
pub(super) async fn serve_udp(shared: Arc<Shared>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let slots = Arc::new(Semaphore::new(UDP_IN_FLIGHT));
    let mut buf = vec![0u8; MAX_FRAME_LEN + 1];
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = shared.cx.shutdown().cancelled() => return,
        };
        let (n, peer) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from an earlier reply and the like: keep serving.
                observe::io_failed("udp recv", &e);
                if !shared.cx.sleep(Duration::from_millis(100)).await {
                    return;
                }
                continue;
            }
        };
        let frame = buf.get(..n).unwrap_or_default().to_vec();
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p,
            () = shared.cx.shutdown().cancelled() => return,
        };
        let (shared, socket) = (shared.clone(), socket.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = shared.handle(&frame, peer).await {
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }
}

/// Accepts connections until shutdown, within the total and per-source limits.
pub(super) async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shared.cx.shutdown().cancelled() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(guard) = ConnGuard::take(&shared, peer) else {
                    // Accept-then-close: the backlog drains and the descriptor is freed now.
                    drop(stream);
                    continue;
                };
                tokio::spawn(connection(guard, stream, peer));
            }
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                observe::io_failed("tcp accept", &e);
                if !shared.cx.sleep(Duration::from_millis(100)).await {
                    return;
                }
            }
        }
    }
}

/// Counts a connection against the limits while it lives.
struct ConnGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ConnGuard {
    fn take(shared: &Arc<Shared>, peer: SocketAddr) -> Option<ConnGuard> {
        let mut conns = shared
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = conns.values().sum();
        if total >= shared.max_connections {
            observe::over_cap(peer, "max_connections", shared.max_connections);
            return None;
        }
        let n = conns.entry(peer.ip()).or_insert(0);
        if *n >= shared.max_per_source {
            observe::over_cap(peer, "max_connections_per_source", shared.max_per_source);
            return None;
        }
        *n += 1;
        Some(ConnGuard {
            shared: shared.clone(),
            ip: peer.ip(),
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut conns = self
            .shared
            .connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = conns.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                conns.remove(&self.ip);
            }
        }
    }
}

/// Takes the next whole frame (`<LF>...<CR>`) out of `buf`, skipping garbage before it.
///
/// Bytes before a `<LF>` are dropped; a frame ends at the first `<CR>`, and starts at the
/// last `<LF>` before it (so a broken frame followed by a good one loses only itself). A
/// pending part longer than a frame can be is dropped up to its next `<LF>`.
pub(crate) fn next_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
            buf.clear();
            return None;
        };
        buf.drain(..lf);
        match buf.iter().position(|&b| b == b'\r') {
            Some(cr) => {
                let start = buf
                    .get(..cr)
                    .and_then(|head| head.iter().rposition(|&b| b == b'\n'))
                    .unwrap_or(0);
                let frame = buf.get(start..=cr).map(<[u8]>::to_vec);
                buf.drain(..=cr);
                if frame.is_some() {
                    return frame;
                }
            }
            None if buf.len() > MAX_FRAME_LEN => {
                // Too long to be a frame: skip to the next LF after the first byte.
                buf.drain(..1);
            }
            None => return None,
        }
    }
}

async fn connection(guard: ConnGuard, stream: TcpStream, peer: SocketAddr) {
    let shared = guard.shared.clone();
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 2048];
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(IDLE_TIMEOUT, reader.read(&mut chunk)) => r,
            () = shared.cx.shutdown().cancelled() => break,
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        while let Some(frame) = next_frame(&mut buf) {
            let Some(reply) = shared.handle(&frame, peer).await else {
                continue;
            };
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&reply)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }
    drop(guard);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::next_frame;

    #[test]
    fn frames_are_cut_at_cr_after_skipping_garbage_and_half_frames_wait() {
        let mut buf = b"junk\nbroken\nA\rxx\nB".to_vec();
        assert_eq!(next_frame(&mut buf).unwrap(), b"\nA\r");
        assert_eq!(next_frame(&mut buf), None);
        assert_eq!(buf, b"\nB");
        buf.extend_from_slice(b"C\r");
        assert_eq!(next_frame(&mut buf).unwrap(), b"\nBC\r");
        assert!(buf.is_empty());
        let mut long = vec![b'\n'];
        long.extend(std::iter::repeat_n(b'x', super::MAX_FRAME_LEN + 5));
        assert_eq!(next_frame(&mut long), None);
        assert!(long.is_empty());
    }
}
