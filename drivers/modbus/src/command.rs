//! `relay.set` and `register.write`: argument checking and the write itself.
//!
//! - `relay.set` `{"point": "siren", "on": true}` writes a writable coil (0x05);
//! - `register.write` `{"point": "setpoint", "value": 21.5}` writes a writable holding
//!   register point, inverting its scale/offset and honouring type and word order (0x06 for
//!   one register, 0x10 for two, so a 32-bit value changes at once).
//!
//! Outcomes: `Succeeded` once the device echoed the write; `Unsupported` for any other
//! command kind; `Rejected` for an unknown device, point or bad arguments, a point that is not writable, or a Modbus
//! exception; `Failed` when the link is down or the exchange failed (may be retried).

use campusgw_sdk::config::suggest;
use campusgw_sdk::{CommandKind, CommandRequest, CommandStatus, DeviceId};

use crate::codec::Table;
use crate::error::ModbusError;
use crate::points::{Point, PointMap, PointRole};
use crate::transport::Link;

/// How a command ended, with the device error behind it, if any.
pub(crate) struct Outcome {
    pub(crate) status: CommandStatus,
    pub(crate) detail: String,
    pub(crate) error: Option<ModbusError>,
}

impl Outcome {
    fn rejected(detail: impl Into<String>) -> Outcome {
        Outcome {
            status: CommandStatus::Rejected,
            detail: detail.into(),
            error: None,
        }
    }
}

/// What to write, checked against the map.
enum Write {
    Coil { address: u16, on: bool },
    Registers { address: u16, words: Vec<u16> },
}

/// Checks and executes `req` on `link` (`None` while reconnecting).
pub(crate) async fn execute(
    map: &PointMap,
    device: &DeviceId,
    req: &CommandRequest,
    link: Option<&mut Link>,
) -> Outcome {
    let kind = &req.command.kind;
    if *kind != CommandKind::RELAY_SET && *kind != CommandKind::REGISTER_WRITE {
        return Outcome {
            status: CommandStatus::Unsupported,
            detail: format!(
                "unsupported command {kind}: modbus drivers take relay.set and register.write"
            ),
            error: None,
        };
    }
    let (write, what) = match plan(map, device, req) {
        Ok(w) => w,
        Err(why) => return Outcome::rejected(why),
    };
    let Some(link) = link else {
        return Outcome {
            status: CommandStatus::Failed,
            detail: "device not connected (reconnecting)".into(),
            error: None,
        };
    };
    let result = match write {
        Write::Coil { address, on } => link.write_coil(address, on).await,
        Write::Registers { address, words } => link.write_words(address, &words).await,
    };
    match result {
        Ok(()) => Outcome {
            status: CommandStatus::Succeeded,
            detail: what,
            error: None,
        },
        Err(e) => {
            let status = if e.is_transient() {
                CommandStatus::Failed
            } else {
                CommandStatus::Rejected
            };
            Outcome {
                status,
                detail: e.to_string(),
                error: Some(e),
            }
        }
    }
}

/// Pure: validates the request and turns it into a write plus a description of it.
fn plan(
    map: &PointMap,
    device: &DeviceId,
    req: &CommandRequest,
) -> Result<(Write, String), String> {
    if &req.device != device {
        return Err(format!(
            "device {} is not served by this driver instance ({device})",
            req.device
        ));
    }
    let args = &req.command.args;
    let kind = &req.command.kind;
    let name = args
        .get("point")
        .and_then(|p| p.as_str())
        .ok_or("missing string argument \"point\"")?;
    let point = find(map, name)?;
    if *kind == CommandKind::RELAY_SET {
        let on = args
            .get("on")
            .and_then(serde_json::Value::as_bool)
            .ok_or("missing boolean argument \"on\"")?;
        writable(point, Table::Coil, kind)?;
        let what = format!(
            "coil {} ({}) set {}",
            point.name,
            point.address,
            if on { "on" } else { "off" }
        );
        Ok((
            Write::Coil {
                address: point.address,
                on,
            },
            what,
        ))
    } else if *kind == CommandKind::REGISTER_WRITE {
        let value = args
            .get("value")
            .and_then(serde_json::Value::as_f64)
            .ok_or("missing numeric argument \"value\"")?;
        writable(point, Table::HoldingRegister, kind)?;
        let PointRole::Register { format, .. } = &point.role else {
            return Err(format!("point {:?} is not a register", point.name));
        };
        let words = format
            .encode(value)
            .map_err(|e| format!("cannot write {:?}: {e}", point.name))?;
        let what = format!(
            "holding register {} ({}) set to {value} (raw {words:?})",
            point.name, point.address
        );
        Ok((
            Write::Registers {
                address: point.address,
                words,
            },
            what,
        ))
    } else {
        Err(format!(
            "unsupported command {kind}: modbus drivers take relay.set and register.write"
        ))
    }
}

fn find<'a>(map: &'a PointMap, name: &str) -> Result<&'a Point, String> {
    map.get(name)
        .ok_or_else(|| match suggest(name, map.names()) {
            Some(s) => format!("unknown point {name:?} (did you mean {s:?}?)"),
            None => format!("unknown point {name:?}"),
        })
}

fn writable(point: &Point, table: Table, kind: &CommandKind) -> Result<(), String> {
    if point.table != table {
        return Err(format!(
            "{kind} needs a {} point; {:?} is a {}",
            table.as_str(),
            point.name,
            point.table.as_str()
        ));
    }
    if !point.writable {
        return Err(format!(
            "point {:?} is not writable (set `writable = true` in its config)",
            point.name
        ));
    }
    Ok(())
}
