//! The `driver = "rtp_multicast"`: zones are multicast groups that speakers listen to.
//!
//! ```toml
//! codec = "pcma"                 # pcma | pcmu: what the speakers are set to decode
//! ttl = 1                        # default: stay on the local network
//! interface = "10.0.3.1"         # optional: the IPv4 address of the NIC to send from
//! [[zone]]
//! device = "pa_b_all"
//! location = "main/B"
//! group = "239.10.0.2:5004"
//! ttl = 2                        # optional per zone
//! [messages.evacuation]          # as for sip_paging
//! ```
//!
//! There is no signalling: a play starts sending at once and a stop stops it; speakers with
//! "barge-in" priority settings pick the stream up. Plain RTP (RFC 3550) with the static
//! payload type of `codec`; the Polycom group-paging framing (PROTOCOLS §5) is not sent.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, Driver, DriverConfig, DriverContext,
    DriverError, FieldPath, Location,
};
use serde::Deserialize;
use tokio::net::UdpSocket;

use crate::config::{buildings, check_zone_ids};
use crate::driver::{Dispatcher, spawn_emitter};
use crate::messages::{self, Library, MessageEntry};
use crate::player::{Reach, Zone};
use crate::rtp::Codec;

/// The rtp_multicast driver's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtpMulticastConfig {
    /// Payload type sent.
    #[serde(default = "default_codec")]
    pub codec: Codec,
    /// Default multicast TTL.
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Default sending interface (its IPv4 address).
    #[serde(default)]
    pub interface: Option<Ipv4Addr>,
    /// The zones.
    #[serde(default)]
    pub zone: Vec<MulticastZone>,
    /// Message library (added to the built-ins).
    #[serde(default)]
    pub messages: BTreeMap<String, MessageEntry>,
    /// Building id → WAV naming it.
    #[serde(default)]
    pub building_clips: BTreeMap<String, String>,
}

/// One `[[zone]]`: a group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MulticastZone {
    /// The zone's device id.
    pub device: DeviceId,
    /// Where it is.
    #[serde(default)]
    pub location: Option<Location>,
    /// `group:port`, an IPv4 multicast address.
    pub group: String,
    /// Overrides the driver's TTL.
    #[serde(default)]
    pub ttl: Option<u32>,
    /// Overrides the driver's interface.
    #[serde(default)]
    pub interface: Option<Ipv4Addr>,
}

fn default_codec() -> Codec {
    Codec::Pcma
}
fn default_ttl() -> u32 {
    1
}

fn group(s: &str) -> Option<SocketAddrV4> {
    s.parse::<SocketAddrV4>()
        .ok()
        .filter(|a| a.ip().is_multicast() && a.port() != 0)
}

impl DriverConfig for RtpMulticastConfig {
    const KIND: &'static str = "rtp_multicast";
    type Driver = RtpMulticastDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.zone.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("zone"),
                "an rtp_multicast device needs at least one [[zone]]",
            ));
        }
        check_zone_ids(self.zone.iter().map(|z| &z.device), at, &mut issues);
        for (i, z) in self.zone.iter().enumerate() {
            if group(&z.group).is_none() {
                issues.push(ConfigIssue::new(
                    at.key("zone").index(i).key("group"),
                    format!(
                        "{:?} is not an IPv4 multicast group:port (224.0.0.0/4)",
                        z.group
                    ),
                ));
            }
            if z.ttl.unwrap_or(self.ttl) > 255 {
                issues.push(ConfigIssue::new(
                    at.key("zone").index(i).key("ttl"),
                    "ttl is at most 255",
                ));
            }
        }
        issues.extend(messages::validate(&self.messages, &self.building_clips, at));
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<RtpMulticastDriver, BuildError> {
        let library = Library::load(
            &self.messages,
            &self.building_clips,
            &buildings(self.zone.iter().map(|z| &z.location)),
        )?;
        Ok(RtpMulticastDriver {
            config: self.clone(),
            library: Arc::new(library),
            instance: cx.device.clone(),
        })
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.zone
            .iter()
            .map(|z| (z.device.clone(), z.location.clone()))
            .collect()
    }
}

/// The running rtp_multicast driver.
#[derive(Debug)]
pub struct RtpMulticastDriver {
    config: RtpMulticastConfig,
    library: Arc<Library>,
    instance: DeviceId,
}

fn sender(ttl: u32, interface: Option<Ipv4Addr>) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    s.set_multicast_ttl_v4(ttl)?;
    // Speakers (and a listener on this host, e.g. the simulator) may share the machine.
    s.set_multicast_loop_v4(true)?;
    if let Some(i) = interface {
        s.set_multicast_if_v4(&i)?;
    }
    let any = SocketAddr::from((interface.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
    s.bind(&any.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

impl Driver for RtpMulticastDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        // The zones end with this run (see the sip_paging driver).
        let local = cx.shutdown().child_token();
        let _stop_tasks = local.clone().drop_guard();
        let events = spawn_emitter(cx.clone());
        let mut d = Dispatcher::new(self.instance.clone(), self.library.clone());
        for z in &self.config.zone {
            let g = group(&z.group)
                .ok_or_else(|| DriverError::Fatal(format!("bad group {:?}", z.group)))?;
            let socket = sender(
                z.ttl.unwrap_or(self.config.ttl),
                z.interface.or(self.config.interface),
            )?;
            let zone = Zone {
                id: z.device.clone(),
                location: z.location.clone().unwrap_or_default(),
                reach: Reach::Multicast {
                    group: SocketAddr::V4(g),
                    codec: self.config.codec,
                },
                socket,
            };
            d.spawn_zone(zone, &events, &local);
        }
        d.serve(&cx).await;
        Ok(())
    }
}
