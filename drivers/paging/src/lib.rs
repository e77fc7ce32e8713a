//! Emergency broadcast for campusgw: evacuation and lockdown messages to IP speakers.
//!
//! Two drivers share one zone player:
//! - `driver = "sip_paging"` ([`SipPagingConfig`]): each zone is a device with a location
//!   and a list of SIP speakers or paging gateways; a play calls every speaker of the zone
//!   with auto-answer headers ([`sip`]) and streams G.711 RTP to each that answers;
//! - `driver = "rtp_multicast"` ([`RtpMulticastConfig`]): each zone is a multicast
//!   group:port the speakers listen to; no signalling.
//!
//! Commands: `broadcast.play {message, zones?, repeat?, priority?}` and
//! `broadcast.stop {message?}` (see [`command`]). Each zone arbitrates by priority
//! ([`priority`]: fire > lockdown > manual > bell): a higher one takes the zone within one
//! packet interval, the displaced one resumes or ends as configured.
//!
//! Invariants:
//! - audio is converted to G.711 once, when the driver is built ([`audio`], [`wav`],
//!   [`g711`]); playing costs a header write and a send per packet;
//! - packets are paced by an absolute schedule (start + n × 20 ms), so a long loop does not
//!   drift, and the RTP timestamp follows the schedule ([`rtp`]);
//! - one speaker that refuses, stalls, answers garbage or hangs up never delays another:
//!   each call is its own task; its failure is reported per speaker and retried per policy;
//!   a fire-priority zone no speaker of which can be reached raises `broadcast.unreachable`
//!   (class `life_safety`).
//!
//! [`sim`] holds the simulated speaker and multicast listener used by tests and the demo.

pub mod audio;
pub mod command;
mod config;
mod driver;
pub mod g711;
pub mod messages;
mod multicast;
mod player;
pub mod priority;
pub mod rtp;
pub mod sim;
pub mod sip;
pub mod speech;
pub mod stats;
pub mod wav;

pub use config::{Password, RetryPolicy, SipPagingConfig, SpeakerEntry, ZoneEntry};
pub use driver::SipPagingDriver;
pub use multicast::{MulticastZone, RtpMulticastConfig, RtpMulticastDriver};
