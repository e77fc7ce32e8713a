//! `GET /api/v1/devices`: every configured device with its state (`crate::health`),
//! grouped by building and floor.

use std::collections::BTreeMap;

use axum::extract::State;
use serde::Serialize;

use super::ConsoleState;
use super::error::ErrorBody;

/// One device.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    /// Its id.
    pub id: String,
    /// Its driver kind.
    pub driver: String,
    /// `online`, `offline`, `unknown` (not heard from yet) and the like.
    pub state: String,
    /// Why, when offline.
    pub reason: Option<String>,
    /// Zone id.
    pub zone: Option<String>,
    /// Point id.
    pub point: Option<String>,
}

/// A floor's devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FloorView {
    /// Floor id (`-` when the device names none).
    pub floor: String,
    /// Devices offline here.
    pub offline: usize,
    /// Its devices.
    pub devices: Vec<DeviceView>,
}

/// A building's floors.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BuildingView {
    /// Building id (`-` when the device names none).
    pub building: String,
    /// Devices offline here.
    pub offline: usize,
    /// Its floors.
    pub floors: Vec<FloorView>,
}

/// Devices by building and floor.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeviceTree {
    /// Total devices.
    pub total: usize,
    /// Offline devices.
    pub offline: usize,
    /// Buildings.
    pub buildings: Vec<BuildingView>,
}

/// Builds the tree from the configured devices and their current states.
pub fn tree(s: &ConsoleState) -> DeviceTree {
    let states = s.health.snapshot();
    let mut map: BTreeMap<String, BTreeMap<String, Vec<DeviceView>>> = BTreeMap::new();
    for d in s.devices.iter() {
        let st = states.get(&d.id);
        let view = DeviceView {
            id: d.id.to_string(),
            driver: d.driver.to_owned(),
            state: st.map_or("unknown", |x| x.state).to_owned(),
            reason: st.and_then(|x| x.reason.clone()),
            zone: d.location.zone.clone(),
            point: d.location.point.clone(),
        };
        let b = d.location.building.clone().unwrap_or_else(|| "-".into());
        let f = d.location.floor.clone().unwrap_or_else(|| "-".into());
        map.entry(b).or_default().entry(f).or_default().push(view);
    }
    let offline = |v: &[DeviceView]| v.iter().filter(|d| d.state == "offline").count();
    let buildings: Vec<BuildingView> = map
        .into_iter()
        .map(|(building, floors)| {
            let floors: Vec<FloorView> = floors
                .into_iter()
                .map(|(floor, devices)| FloorView {
                    floor,
                    offline: offline(&devices),
                    devices,
                })
                .collect();
            BuildingView {
                building,
                offline: floors.iter().map(|f| f.offline).sum(),
                floors,
            }
        })
        .collect();
    DeviceTree {
        total: s.devices.len(),
        offline: buildings.iter().map(|b| b.offline).sum(),
        buildings,
    }
}

/// Devices and their states by building and floor.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    responses((status = 200, body = DeviceTree), (status = 401, body = ErrorBody)))]
pub async fn list(State(s): State<ConsoleState>) -> axum::Json<DeviceTree> {
    axum::Json(tree(&s))
}
