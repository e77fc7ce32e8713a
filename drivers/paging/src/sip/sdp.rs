//! The SDP (RFC 4566, RFC 3264) offer and answer of a paging call. The SIP message codec
//! itself lives in `campusgw-sip` and is re-exported beside these as [`super::msg`].

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::rtp::Codec;

/// The SDP offer (RFC 4566, RFC 3264): one audio stream, G.711 in `codecs` order, 20 ms
/// packets, send-only (a speaker never talks back).
pub fn sdp_offer(ip: IpAddr, port: u16, session: u64, codecs: &[Codec]) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let pts: Vec<String> = codecs
        .iter()
        .map(|c| c.payload_type().to_string())
        .collect();
    let mut s = format!(
        "v=0\r\no=campusgw {session} {session} IN {family} {ip}\r\ns=campusgw paging\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n",
        pts.join(" ")
    );
    for c in codecs {
        let _ = write!(s, "a=rtpmap:{} {}/8000\r\n", c.payload_type(), c.sdp_name());
    }
    s.push_str("a=ptime:20\r\na=sendonly\r\n");
    s
}

/// What an SDP answer asks us to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpAnswer {
    /// Where the RTP goes.
    pub addr: IpAddr,
    /// Its port.
    pub port: u16,
    /// The first payload type of the answer that we offered.
    pub codec: Codec,
}

/// Reads an SDP answer against the codecs we offered.
///
/// # Errors
/// A reason when there is no usable audio stream.
pub fn sdp_answer(body: &str, offered: &[Codec]) -> Result<SdpAnswer, &'static str> {
    let mut session_addr = None;
    let mut media_addr = None;
    let mut media: Option<(u16, Vec<u8>)> = None;
    for line in body.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix("c=") {
            let addr = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next());
            let addr = addr.and_then(|a| a.parse::<IpAddr>().ok());
            if media.is_some() {
                media_addr = addr;
            } else {
                session_addr = addr;
            }
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            let mut f = m.split_whitespace();
            let port = f.next().and_then(|p| p.parse().ok()).ok_or("bad m= port")?;
            let pts = f.skip(1).filter_map(|p| p.parse().ok()).collect();
            media = Some((port, pts));
        }
    }
    let (port, pts) = media.ok_or("no audio stream in the answer")?;
    if port == 0 {
        return Err("the audio stream was rejected (port 0)");
    }
    let codec = pts
        .iter()
        .filter_map(|&pt| Codec::from_payload_type(pt))
        .find(|c| offered.contains(c))
        .ok_or("no offered codec in the answer")?;
    let addr = media_addr
        .or(session_addr)
        .ok_or("no connection address in the answer")?;
    Ok(SdpAnswer { addr, port, codec })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_lists_g711_sendonly_with_20ms_packets_and_the_answer_picks_an_offered_codec() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let offer = sdp_offer(ip, 40000, 7, &[Codec::Pcma, Codec::Pcmu]);
        assert!(offer.contains("m=audio 40000 RTP/AVP 8 0\r\n"));
        assert!(offer.contains("a=rtpmap:8 PCMA/8000\r\n"));
        assert!(offer.contains("a=ptime:20\r\na=sendonly\r\n"));
        let answer = "v=0\r\nc=IN IP4 10.0.0.9\r\nm=audio 6000 RTP/AVP 0 101\r\n";
        assert_eq!(
            sdp_answer(answer, &[Codec::Pcma, Codec::Pcmu]),
            Ok(SdpAnswer {
                addr: "10.0.0.9".parse().unwrap(),
                port: 6000,
                codec: Codec::Pcmu
            })
        );
        assert!(
            sdp_answer(
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 0 RTP/AVP 8\r\n",
                &[Codec::Pcma]
            )
            .is_err()
        );
        assert!(
            sdp_answer(
                "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 9 RTP/AVP 18\r\n",
                &[Codec::Pcma]
            )
            .is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn the_answer_reader_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = sdp_answer(&String::from_utf8_lossy(&b), &[Codec::Pcma]);
        }
    }
}
