//! GB/T 28181 (公共安全视频监控联网系统信息传输、交换、控制技术要求) toward a police
//! video platform, on the device side: campusgw registers as one device whose Catalog lists
//! the school's alarm inputs (one-button alarms, intrusion zones) and links its cameras,
//! and reports alarms as MANSCDP `Alarm` notifications.
//!
//! - [`ua`]: the SIP user agent (REGISTER with digest and refresh, Keepalive, Alarm
//!   MESSAGE, answers to the platform's Catalog query) over UDP, on `campusgw-sip`;
//! - [`manscdp`]: the XML bodies, GB2312 or UTF-8;
//! - [`config`]: the platform table of the `[[uplink]] kind = "gb28181"`;
//! - [`id`]: 20-digit ids;
//! - [`sim`]: a simulated platform for tests and the demo.
//!
//! Alarms go as `MESSAGE` with a `<Notify><CmdType>Alarm</CmdType>` body (GB/T 28181-2016
//! §9.4 报警事件通知 uses MESSAGE; `NOTIFY` is for subscriptions, which the gateway does
//! not offer). The platform's 2xx to that MESSAGE confirms the alarm; its later
//! `<Response>` MESSAGE is answered 200 and logged.
//!
//! Live video is not relayed: each camera or NVR keeps its own GB/T 28181 registration
//! with the platform; the gateway only lists their ids in its Catalog so the platform can
//! link an alarm input to the camera that watches it.

pub mod config;
pub mod id;
pub mod manscdp;
pub mod sim;
pub mod ua;

pub use config::PlatformConfig;
pub use id::GbId;
