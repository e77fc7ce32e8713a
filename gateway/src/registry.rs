//! The explicit list of drivers and uplink kinds: `driver = "name"` → config type.
//!
//! Adding a driver touches its own crate, one line in [`DRIVERS`], the README's devices
//! table, and its tests. Nothing else.

use std::sync::Arc;

use campusgw_sdk::config::suggest;
use campusgw_sdk::driver::{
    BoxFuture, BuildContext, BuildError, Driver, DriverConfig, DriverContext, DriverError,
};
use campusgw_sdk::{ConfigIssue, DeviceId, FieldPath, Location};

use crate::config::{UplinkConfig, typed_value};
use crate::uplink::UplinkKindConfig;
use crate::uplink::config::{ParseKindFn as UplinkParseFn, parse_kind};

/// A validated driver config, type-erased so the supervisor can build and run it.
pub trait DriverFactory: Send + Sync + 'static {
    /// The driver kind.
    fn kind(&self) -> &'static str;
    /// Builds a fresh driver and returns its run future.
    ///
    /// # Errors
    /// [`BuildError`] from the driver's `build`.
    fn start(
        &self,
        bcx: &BuildContext,
        cx: DriverContext,
    ) -> Result<BoxFuture<'static, Result<(), DriverError>>, BuildError>;
    /// Devices behind this instance besides its own.
    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)>;
    /// Doors on an escape route (fire egress wins over lockdown for them).
    fn escape_routes(&self) -> Vec<DeviceId>;
    /// Where the instance stores the files its events name (snapshots).
    fn media_dir(&self, data_dir: &std::path::Path) -> Option<std::path::PathBuf>;
}

impl<C: DriverConfig> DriverFactory for C {
    fn kind(&self) -> &'static str {
        C::KIND
    }
    fn start(
        &self,
        bcx: &BuildContext,
        cx: DriverContext,
    ) -> Result<BoxFuture<'static, Result<(), DriverError>>, BuildError> {
        let driver = self.build(bcx)?;
        Ok(Box::pin(driver.run(cx)))
    }
    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        DriverConfig::sub_devices(self)
    }
    fn escape_routes(&self) -> Vec<DeviceId> {
        DriverConfig::escape_routes(self)
    }
    fn media_dir(&self, data_dir: &std::path::Path) -> Option<std::path::PathBuf> {
        DriverConfig::media_dir(self, data_dir)
    }
}

type ParseFn = fn(toml::Value, &FieldPath, &mut Vec<ConfigIssue>) -> Option<Arc<dyn DriverFactory>>;

/// Every driver kind this build knows.
pub const DRIVERS: &[(&str, ParseFn)] = &[
    (
        campusgw_modbus::ModbusTcpConfig::KIND,
        parse_typed::<campusgw_modbus::ModbusTcpConfig>,
    ),
    (
        campusgw_modbus::ModbusRtuConfig::KIND,
        parse_typed::<campusgw_modbus::ModbusRtuConfig>,
    ),
    (
        campusgw_modbus::ModbusRtuOverTcpConfig::KIND,
        parse_typed::<campusgw_modbus::ModbusRtuOverTcpConfig>,
    ),
    (
        campusgw_dlt645::Dlt645Config::KIND,
        parse_typed::<campusgw_dlt645::Dlt645Config>,
    ),
    (
        campusgw_gb26875::Gb26875Config::KIND,
        parse_typed::<campusgw_gb26875::Gb26875Config>,
    ),
    (
        campusgw_dc09::Dc09Config::KIND,
        parse_typed::<campusgw_dc09::Dc09Config>,
    ),
    (
        campusgw_paging::SipPagingConfig::KIND,
        parse_typed::<campusgw_paging::SipPagingConfig>,
    ),
    (
        campusgw_paging::RtpMulticastConfig::KIND,
        parse_typed::<campusgw_paging::RtpMulticastConfig>,
    ),
    (
        campusgw_hikvision::HikvisionConfig::KIND,
        parse_typed::<campusgw_hikvision::HikvisionConfig>,
    ),
    (
        campusgw_onvif::OnvifConfig::KIND,
        parse_typed::<campusgw_onvif::OnvifConfig>,
    ),
    (
        campusgw_zkteco::ZktecoConfig::KIND,
        parse_typed::<campusgw_zkteco::ZktecoConfig>,
    ),
    (
        campusgw_canteen::CanteenConfig::KIND,
        parse_typed::<campusgw_canteen::CanteenConfig>,
    ),
];

fn parse_typed<C: DriverConfig>(
    v: toml::Value,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Arc<dyn DriverFactory>> {
    let c: C = typed_value(v, at, issues)?;
    let problems = c.validate(at);
    if problems.is_empty() {
        Some(Arc::new(c))
    } else {
        issues.extend(problems);
        None
    }
}

/// Parses a device's driver table for `kind`.
pub(crate) fn parse_driver(
    kind: &str,
    v: toml::Value,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Arc<dyn DriverFactory>> {
    match DRIVERS.iter().find(|(k, _)| *k == kind) {
        Some((_, parse)) => parse(v, at, issues),
        None => {
            let known: Vec<&str> = DRIVERS.iter().map(|(k, _)| *k).collect();
            let hint = suggest(kind, known.iter().copied())
                .map(|s| format!(" (did you mean \"{s}\"?)"))
                .unwrap_or_default();
            issues.push(ConfigIssue::new(
                at.key("driver"),
                format!(
                    "unknown driver \"{kind}\"{hint}; this build has: {}",
                    known.join(", ")
                ),
            ));
            None
        }
    }
}

/// Every uplink kind this build knows: `kind = "name"` → its config's pure validation
/// ([`crate::uplink::UplinkKindConfig`]). A kind not listed is refused at start (and by
/// `check-config`) with its file and line.
pub const UPLINKS: &[(&str, UplinkParseFn)] = &[
    (
        crate::uplink::config::MqttConfig::KIND,
        parse_kind::<crate::uplink::config::MqttConfig>,
    ),
    (
        crate::uplink::config::WebhookConfig::KIND,
        parse_kind::<crate::uplink::config::WebhookConfig>,
    ),
    (
        crate::uplink::dc09::Dc09UplinkConfig::KIND,
        parse_kind::<crate::uplink::dc09::Dc09UplinkConfig>,
    ),
    (
        crate::uplink::gb26875::Gb26875UplinkConfig::KIND,
        parse_kind::<crate::uplink::gb26875::Gb26875UplinkConfig>,
    ),
    (
        crate::uplink::card_platform::CardPlatformConfig::KIND,
        parse_kind::<crate::uplink::card_platform::CardPlatformConfig>,
    ),
    (
        crate::uplink::gb28181::Gb28181UplinkConfig::KIND,
        parse_kind::<crate::uplink::gb28181::Gb28181UplinkConfig>,
    ),
];

/// Parses an `[[uplink]]` table.
///
/// # Errors
/// The problems found.
pub(crate) fn parse_uplink(
    v: toml::Value,
    at: &FieldPath,
) -> Result<UplinkConfig, Vec<ConfigIssue>> {
    crate::uplink::parse(v, at)
}
