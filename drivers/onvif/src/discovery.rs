//! WS-Discovery (2005/04) of ONVIF cameras on the device LAN, for `campusgw discover onvif`.
//!
//! A SOAP 1.2 `Probe` for `dn:NetworkVideoTransmitter` goes to 239.255.255.250:3702 from the
//! chosen interface; cameras answer `ProbeMatches` by unicast to our port. Answers are
//! matched by `RelatesTo` (our `MessageID`), de-duplicated by endpoint address, and printed
//! as `[[device.camera]]` snippets. [`parse_probe_matches`] is pure and fuzzed.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use crate::soap::SoapError;
use crate::xml;

/// WS-Discovery multicast group and port (WS-Discovery 2005/04 §2.4).
pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 3702);

/// The largest datagram read (a ProbeMatch with many scopes is ~2 KB).
const MAX_DATAGRAM: usize = 16 * 1024;

/// One camera that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `EndpointReference/Address` (usually `urn:uuid:...`).
    pub endpoint: String,
    /// Device service URLs.
    pub xaddrs: Vec<String>,
    /// ONVIF scopes (`onvif://www.onvif.org/name/...`).
    pub scopes: Vec<String>,
    /// Who sent the answer.
    pub from: SocketAddr,
}

impl Found {
    /// The `name` scope, if any (percent-encoded spaces decoded).
    pub fn name(&self) -> Option<String> {
        self.scope("name")
    }

    /// The `hardware` scope, if any.
    pub fn hardware(&self) -> Option<String> {
        self.scope("hardware")
    }

    fn scope(&self, what: &str) -> Option<String> {
        let prefix = format!("onvif://www.onvif.org/{what}/");
        self.scopes
            .iter()
            .find_map(|s| s.strip_prefix(&prefix))
            .map(|v| v.replace("%20", " "))
    }
}

/// The `Probe` message with `message_id` (`uuid:...`).
pub fn probe(message_id: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
            r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" "#,
            r#"xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>"#,
            r#"<a:Action s:mustUnderstand="1">http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>"#,
            "<a:MessageID>{}</a:MessageID>",
            "<a:ReplyTo><a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address></a:ReplyTo>",
            r#"<a:To s:mustUnderstand="1">urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>"#,
            "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"
        ),
        xml::escape(message_id)
    )
}

/// The `RelatesTo` and matches of a `ProbeMatches` datagram (at most 16 matches kept).
///
/// # Errors
/// [`SoapError`] for refused XML or a message that is not `ProbeMatches`.
pub fn parse_probe_matches(input: &[u8]) -> Result<(String, Vec<Match>), SoapError> {
    let root = xml::parse(input)?;
    let relates = root
        .path(&["Header", "RelatesTo"])
        .map(|e| e.text().to_owned())
        .ok_or(SoapError::Missing("RelatesTo"))?;
    let pm = root
        .path(&["Body", "ProbeMatches"])
        .ok_or(SoapError::Missing("ProbeMatches"))?;
    let words = |e: Option<&xml::Element>| -> Vec<String> {
        e.map(|e| {
            e.text()
                .split_whitespace()
                .take(32)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let matches = pm
        .children_named("ProbeMatch")
        .filter_map(|m| {
            Some(Match {
                endpoint: m.path(&["EndpointReference", "Address"])?.text().to_owned(),
                xaddrs: words(m.child("XAddrs")),
                scopes: words(m.child("Scopes")),
            })
        })
        .take(16)
        .collect();
    Ok((relates, matches))
}

/// One `ProbeMatch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Endpoint address.
    pub endpoint: String,
    /// Device service URLs.
    pub xaddrs: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
}

/// Probes the LAN of `interface` (its IPv4 address) and collects answers for `timeout`.
///
/// # Errors
/// When the socket cannot be set up or the probe cannot be sent.
pub async fn discover(interface: Ipv4Addr, timeout: Duration) -> std::io::Result<Vec<Found>> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    sock.set_multicast_if_v4(&interface)?;
    // One hop: cameras on the device LAN, never beyond its router.
    sock.set_multicast_ttl_v4(1)?;
    sock.bind(&SocketAddr::from((interface, 0)).into())?;
    sock.set_nonblocking(true)?;
    let sock = tokio::net::UdpSocket::from_std(sock.into())?;
    probe_with(sock, SocketAddr::V4(MULTICAST), timeout).await
}

/// The IPv4 address the kernel would send WS-Discovery probes from (the route to the
/// multicast group), for `campusgw discover onvif` without `--interface`. Nothing is sent.
///
/// # Errors
/// When there is no route to 239.255.255.250.
pub fn default_interface() -> std::io::Result<Ipv4Addr> {
    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    // `connect` on UDP only picks the route and source address.
    sock.connect(MULTICAST)?;
    match sock.local_addr()? {
        SocketAddr::V4(a) if !a.ip().is_unspecified() => Ok(*a.ip()),
        _ => Err(std::io::Error::other(
            "the route to 239.255.255.250 has no IPv4 source address",
        )),
    }
}

/// Sends one probe from `sock` to `target` and collects matching answers for `timeout`
/// (unicast probing; also what the tests use).
///
/// # Errors
/// When the probe cannot be sent.
pub async fn probe_with(
    sock: tokio::net::UdpSocket,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Vec<Found>> {
    let id = format!("uuid:{}", uuid_v4());
    sock.send_to(probe(&id).as_bytes(), target).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut found: Vec<Found> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while let Ok(r) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        let Ok((n, from)) = r else { continue };
        let Ok((relates, matches)) = parse_probe_matches(buf.get(..n).unwrap_or_default()) else {
            continue;
        };
        if relates != id {
            continue;
        }
        for m in matches {
            if !found.iter().any(|f| f.endpoint == m.endpoint) {
                found.push(Found {
                    endpoint: m.endpoint,
                    xaddrs: m.xaddrs,
                    scopes: m.scopes,
                    from,
                });
            }
        }
    }
    Ok(found)
}

fn uuid_v4() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// `[[device.camera]]` entries for what was found, ready to paste under an `onvif` device.
pub fn config_snippet(found: &[Found]) -> String {
    let mut out = String::new();
    for (i, f) in found.iter().enumerate() {
        let label = f.name().unwrap_or_else(|| format!("camera {}", i + 1));
        let id: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let xaddr = f.xaddrs.first().cloned().unwrap_or_default();
        out.push_str(&format!(
            "# {label}{} at {} ({})\n[[device.camera]]\ndevice = \"cam_{id}\"\n# location = \"campus/building/floor/zone\"\nxaddr = \"{xaddr}\"\n# user = \"campusgw\"\n# password_file = \"/etc/campusgw/secrets/cam_{id}\"\n",
            f.hardware().map(|h| format!(", {h}")).unwrap_or_default(),
            f.from,
            f.endpoint,
        ));
        if xaddr.starts_with("http://") {
            out.push_str("# plain http: prefer https, or set allow_http = true\n");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_asks_for_network_video_transmitters_with_our_message_id() {
        let p = probe("uuid:1234");
        let root = xml::parse(p.as_bytes()).expect("well-formed");
        assert_eq!(
            root.path(&["Header", "MessageID"]).map(|e| e.text()),
            Some("uuid:1234")
        );
        assert_eq!(
            root.path(&["Body", "Probe", "Types"]).map(|e| e.text()),
            Some("dn:NetworkVideoTransmitter")
        );
    }
}
