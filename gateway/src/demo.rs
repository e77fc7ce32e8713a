//! `campusgw demo`: a small simulated school, run by the real gateway.
//!
//! Simulators (each a real protocol peer on loopback, started in this process):
//! - `fire_panel_io` (Modbus TCP): the fire alarm panel's output contacts on discrete
//!   inputs (0 alarm, 1 fault) and its siren / strobe coils;
//! - `door_release_a` (Modbus RTU over TCP): door-release relays for building A;
//! - `power_meter` and `boiler_temp` (Modbus TCP): input registers;
//! - `uitd_bldg_a` (GB/T 26875.3-2011): the building's user information transmission
//!   device, connecting to the gateway's `fire_listener` and reporting smoke detectors;
//! - `guard_room_panic` and `lab_intrusion` (SIA DC-09): the guard room's one-button alarm
//!   (门卫室一键报警; ADM-CID, AES-128, TCP) and the lab building's intrusion panel (实验楼;
//!   SIA DCS, UDP), talking to the gateway's `alarm_receiver`, each with NULL supervision
//!   every 20 s (the receiver reports an account offline after 60 s of silence).
//!
//! - `police` (the uplink `kind = "dc09"`): a simulated police alarm receiving centre
//!   (ARC) that acknowledges what the gateway forwards: the panic and the intrusion;
//! - `police_video` (the uplink `kind = "gb28181"`): a simulated police video platform
//!   the gateway registers with (digest), answering the guard room's panic as the alarm
//!   input `34020000001340000001` (GB2312 MANSCDP) with 200 OK;
//! - `pa_system` (SIP + RTP, `sip_paging`): two IP speakers on building A's first floor
//!   (zone `pa_a_1f`) that auto-answer and check the RTP they hear;
//! - `acs_gate` and `acs_a` (Hikvision ISAPI): the gate's turnstiles and building A's doors,
//!   with their alert streams and door control (door `door_a_4`, the server room, is not an
//!   escape route);
//! - `cameras_a` (ONVIF): a camera on building A's first floor with field and line
//!   detection, PullPoint events and snapshots.
//!
//! The gateway runs with an embedded config pointing at them (validated like any file).
//! The rules engine runs the default school rule pack (`rules/pack/`, written into
//! `<data_dir>/rules/` at start) plus `demo.toml` below, which maps the confirmed fire onto
//! the demo's Modbus door-release relays and siren; the pack's own `door.unlock` and
//! `broadcast.play` reach building A's ISAPI doors (held open: fire egress) and speakers
//! (the evacuation cycle), and the panic's `door.lock` to the campus locks every door that
//! is not held for egress.
//! A script drives a cycle: readings wander; at 0:05 the panel's alarm contact closes (one
//! alarm device: the zone's alarm is raised, no linkage yet); at 0:08 the UITD reports the
//! smoke detector 10-2 in alarm (GB/T 26875), the second device of zone A/1/east, so the
//! fire is confirmed: building A's door relays are released, the siren sounds and a
//! critical alarm is raised; at 0:15 a detector fault; at 0:20 the panel resets and at 0:22 the UITD reports the reset; at 0:30 the meter goes silent and is reported offline,
//! and it returns at 0:40. DC-09: at 0:12 the guard presses the panic button (Contact ID
//! 120, a critical alarm from the school pack's `panic_lockdown`) and at 0:18 it is reset
//! (restore); at 0:35 the lab's corridor detector reports an intrusion (SIA `BA`) and at
//! 0:45 its restore (`BR`); the police uplink forwards both to the ARC, which prints what it
//! acknowledged. At 0:03 a student's face passes the gate turnstile; at 0:25 building A's
//! door 3 is forced; at 0:30 the camera sees someone in its field and at 0:40 a line
//! crossing. The fire at 0:08 holds building A's escape doors open (egress), so the panic's
//! lockdown at 0:12 locks the gate and the server room but is refused, journaled, at the
//! escape doors: egress wins. Doors and broadcast stay as the rules left them (an operator
//! releases them from the console). The cycle repeats every minute. Every committed event is
//! printed as it is journaled.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use campusgw_modbus::sim::Simulator;
use campusgw_sdk::Event;
use tokio_util::sync::CancellationToken;

use crate::app::{Gateway, RunOptions, wait_for_signal};

/// Prints a line; a closed stdout (e.g. piped into `head`) is not worth a panic.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

struct Sims {
    fire_port: u16,
    dc09_port: u16,
    arc: campusgw_dc09::sim::ArcSim,
    speakers: [campusgw_paging::sim::SpeakerSim; 2],
    gate: campusgw_hikvision::sim::IsapiSim,
    doors_a: campusgw_hikvision::sim::IsapiSim,
    camera: campusgw_onvif::sim::SimCamera,
    panel: Simulator,
    doors: Simulator,
    meter: Simulator,
    boiler: Simulator,
    /// The city fire-monitoring centre the `fire_centre` uplink reports to.
    centre: campusgw_gb26875::sim::centre::CentreSim,
    /// The police video platform the `police_video` uplink registers with.
    video: campusgw_gb28181::sim::PlatformSim,
    /// Building B's ZKTeco controller (started once the gateway's iclock server listens).
    zk_b: Option<campusgw_zkteco::sim::ControllerSim>,
    zk_port: u16,
    /// Building A's RS-485 bus of DL/T 645 meters behind a serial server.
    energy: campusgw_dlt645::sim::BusSim,
    /// The canteen's terminal server port, and the campus-card platform it syncs with.
    canteen_port: u16,
    card_platform: campusgw_canteen::sim::platform::PlatformSim,
}

/// Runs the demo until Ctrl-C or `duration`.
///
/// # Errors
/// Start-up failures (a busy listen address, an unwritable data dir).
pub async fn run(
    data_dir: Option<PathBuf>,
    listen: SocketAddr,
    duration: Option<Duration>,
) -> anyhow::Result<i32> {
    let data_dir = data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("campusgw-demo-{}", uuid::Uuid::now_v7()))
    });
    use campusgw_paging::sim::{Behaviour, SpeakerSim};
    let isapi = |doors| campusgw_hikvision::sim::SimConfig {
        doors,
        password: DEMO_DEVICE_PASSWORD.to_owned(),
        ..campusgw_hikvision::sim::SimConfig::default()
    };
    // The platform's digest password: random per run, in a 0600 file like a real one.
    let video_password = crate::console::auth::random_token();
    let sims = Sims {
        fire_port: crate::bench::free_port()?,
        dc09_port: crate::bench::free_port()?,
        arc: campusgw_dc09::sim::ArcSim::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            std::collections::HashMap::new(),
            campusgw_dc09::sim::ArcMode::Ack,
        )
        .await?,
        speakers: [
            SpeakerSim::start(Behaviour::Answer).await?,
            SpeakerSim::start(Behaviour::Answer).await?,
        ],
        gate: campusgw_hikvision::sim::IsapiSim::start(isapi(2)).await?,
        doors_a: campusgw_hikvision::sim::IsapiSim::start(isapi(4)).await?,
        camera: campusgw_onvif::sim::SimCamera::start(Some(("campusgw", DEMO_DEVICE_PASSWORD)))
            .await?,
        panel: Simulator::start().await?,
        doors: Simulator::start_rtu_over_tcp().await?,
        meter: Simulator::start().await?,
        boiler: Simulator::start().await?,
        centre: campusgw_gb26875::sim::centre::CentreSim::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            campusgw_gb26875::sim::centre::CentreConfig::new(CITY_CENTRE, SCHOOL_UITD),
        )
        .await?,
        video: campusgw_gb28181::sim::PlatformSim::start(
            campusgw_gb28181::sim::SimSettings {
                platform_id: campusgw_gb28181::GbId::new(VIDEO_PLATFORM)
                    .map_err(anyhow::Error::msg)?,
                username: VIDEO_GATEWAY.into(),
                password: video_password.clone(),
                expires: 3600,
                charset: campusgw_gb28181::manscdp::Charset::Gb2312,
            },
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await?,
        zk_b: None,
        zk_port: crate::bench::free_port()?,
        energy: campusgw_dlt645::sim::BusSim::start(9600).await?,
        canteen_port: crate::bench::free_port()?,
        card_platform: campusgw_canteen::sim::platform::PlatformSim::start(
            DEMO_CARD_PLATFORM_TOKEN,
            campusgw_canteen::sim::card_list(50, 10_000),
        )
        .await,
    };
    let mut sims = sims;
    for m in ENERGY_METERS {
        sims.energy.add_meter(m);
    }
    std::fs::create_dir_all(&data_dir)?;
    std::fs::write(data_dir.join("roster.csv"), DEMO_ROSTER)?;
    write_rules(&data_dir.join("rules"))?;
    write_secret(&data_dir.join("device.pass"), DEMO_DEVICE_PASSWORD)?;
    write_secret(&data_dir.join("gb28181.pass"), &video_password)?;
    let text = config_text(&sims, &data_dir, listen);
    let mut config = crate::config::parse(&text, Path::new("<demo>"))
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    // On disk too, so the console's bulk import (/import) has a file to preview and apply
    // against (it is written afresh at every demo start).
    let file = data_dir.join("gateway.toml");
    std::fs::write(&file, &text)?;
    config.source = Some(file);
    let opts = RunOptions {
        maintenance_every: Duration::from_secs(30),
        ..RunOptions::default()
    };
    let gw = Gateway::start(config, opts).await?;
    sims.zk_b = Some(
        campusgw_zkteco::sim::ControllerSim::start(
            campusgw_zkteco::sim::SimConfig::new(
                format!("http://127.0.0.1:{}", sims.zk_port),
                "DEMO-B-01",
            )
            .doors(2),
        )
        .await
        .map_err(|e| anyhow::anyhow!("demo ZKTeco controller: {e}"))?,
    );
    // A demo admin with random one-time credentials: printed here once, stored hashed.
    let demo_password = crate::console::auth::random_token();
    gw.console
        .auth
        .set_password("demo", &demo_password, crate::console::auth::Role::Admin)
        .await?;
    say!("campusgw demo: a simulated school is running.");
    say!(
        "  console: http://{}/  (user demo, password {demo_password}; this run only)",
        gw.http_addr
    );
    say!("  health:  http://{}/healthz", gw.http_addr);
    say!("  metrics: http://{}/metrics", gw.http_addr);
    say!(
        "  journal: campusgw journal export --data-dir {}",
        data_dir.display()
    );
    say!("  Ctrl-C stops it. Events as they are journaled:");
    let stop = CancellationToken::new();
    let gw = Arc::new(gw);
    let printer = tokio::spawn(print_events(gw.journal.subscribe(), stop.clone()));
    let uitd = tokio::spawn(uitd_script(sims.fire_port, stop.clone()));
    let dc09_addr = SocketAddr::from(([127, 0, 0, 1], sims.dc09_port));
    let guard = tokio::spawn(dc09_panel(
        guard_room(dc09_addr)?,
        guard_room_at,
        stop.clone(),
    ));
    let lab = tokio::spawn(dc09_panel(lab_panel(dc09_addr), lab_at, stop.clone()));
    let script = tokio::spawn(script(sims, stop.clone()));
    match duration {
        Some(d) => {
            tokio::select! { () = tokio::time::sleep(d) => {}, () = wait_for_signal() => {} }
        }
        None => wait_for_signal().await,
    }
    stop.cancel();
    for t in [printer, script, uitd, guard, lab] {
        let _ = t.await;
    }
    match Arc::try_unwrap(gw) {
        Ok(gw) => gw.stop().await,
        Err(_) => tracing::warn!("demo tasks still hold the gateway; stopping without flush wait"),
    }
    say!(
        "campusgw demo stopped; the journal is kept in {}",
        data_dir.display()
    );
    Ok(0)
}

/// The school's address as a transmission device, and the city centre's (demo values).
const SCHOOL_UITD: u64 = 4242;
const CITY_CENTRE: u64 = 88888;

/// The police video platform's SIP server id and the id it gave the school (demo values).
const VIDEO_PLATFORM: &str = "34020000002000000001";
const VIDEO_GATEWAY: &str = "34020000001180000001";

/// Building A's DL/T 645 meters (addresses as on their name plates).
const ENERGY_METERS: [&str; 2] = ["000102030425", "000102030426"];

/// The demo's roster: names for the muster list (never journaled).
const DEMO_ROSTER: &str =
    "person_id,name,role\nS1001,李明,student\nS1002,王芳,student\nT0001,张伟,staff\n";

/// The demo's door controllers' and camera's password (a demo value, not a secret; the
/// drivers read it from a 0600 file as they would a real one).
const DEMO_DEVICE_PASSWORD: &str = "demo-device-password";

/// The demo canteen till's token and the card platform's (demo values, not secrets).
const DEMO_TILL_TOKEN: &str = "demo-canteen-till-token";
const DEMO_CARD_PLATFORM_TOKEN: &str = "demo-card-platform-token";

/// Writes a secret file readable by its owner only (the drivers refuse anything looser).
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn config_text(s: &Sims, data_dir: &Path, listen: SocketAddr) -> String {
    format!(
        r#"
[gateway]
id = "demo-school"
name = "Demo No. 1 Middle School"
data_dir = "{data}"

[[campus]]
id = "main"
[[campus.building]]
id = "A"
name = "Teaching building A"
[[campus.building.floor]]
id = "1"
zones = ["east", "west", "plant"]
[[campus.building]]
id = "gate"
name = "Gate house (门卫室)"
[[campus.building.floor]]
id = "1"
zones = ["guard_room", "turnstiles"]
[[campus.building]]
id = "lab"
name = "Laboratory building (实验楼)"
[[campus.building.floor]]
id = "2"
zones = ["corridor"]

[[campus.building]]
id = "B"
name = "Teaching building B"
[[campus.building.floor]]
id = "1"
zones = ["east"]

[console]
listen = "{listen}"

[access]
roster = "{data}/roster.csv"

[rules]
dir = "{data}/rules"

[[device]]
id = "fire_panel_io"
driver = "modbus_tcp"
location = "main/A/1/east"
address = "{panel}"
poll_interval = "200ms"
request_timeout = "500ms"
offline_after = "5s"
[[device.points]]
name = "fire_alarm_out"
table = "discrete_input"
address = 0
on_kind = "fire.alarm"
off_kind = "fire.reset"
class = "life_safety"
[[device.points]]
name = "fault_out"
table = "discrete_input"
address = 1
on_kind = "fire.fault"
off_kind = "fire.fault_cleared"
class = "security"
[[device.points]]
name = "siren"
table = "coil"
address = 0
writable = true
[[device.points]]
name = "strobe"
table = "coil"
address = 1
writable = true

[[device]]
id = "fire_listener"
driver = "gb26875"
location = "main/A"
listen = "127.0.0.1:{fire_port}"
centre_address = 88888
heartbeat_timeout = "60s"
[[device.uitd]]
address = 889
device = "uitd_bldg_a"
location = "main/A"
[[device.uitd.components]]
address = "10-2"
location = "main/A/1/east/smoke-10-2"

[[device]]
id = "alarm_receiver"
driver = "dc09"
location = "main"
listen_tcp = "127.0.0.1:{dc09_port}"
listen_udp = "127.0.0.1:{dc09_port}"
unknown_account = "refuse"
[[device.account]]
account = "{GUARD_ACCOUNT}"
device = "guard_room_panic"
location = "main/gate/1/guard_room"
key = "{GUARD_KEY}"
supervision = "60s"
[[device.account.zone]]
number = 1
name = "门卫室一键报警"
location = "main/gate/1/guard_room/panic-button"
[[device.account]]
account = "{LAB_ACCOUNT}"
device = "lab_intrusion"
location = "main/lab/2"
supervision = "60s"
[[device.account.zone]]
number = 3
name = "实验楼二层走廊"
location = "main/lab/2/corridor/pir-3"

[[uplink]]
name = "police"
kind = "dc09"
receivers = ["{arc}"]
account = "5A01"
supervision = "30s"

[[device]]
id = "pa_system"
driver = "sip_paging"
location = "main/A"
bind = "127.0.0.1:0"
[[device.zone]]
device = "pa_a_1f"
location = "main/A/1"
speakers = [{{ uri = "{spk1}" }}, {{ uri = "{spk2}" }}]

[[device]]
id = "acs_gate"
driver = "hikvision_isapi"
location = "main/gate/1/turnstiles"
host = "{gate}"
user = "admin"
password_file = "{data}/device.pass"
[[device.doors]]
n = 1
device = "gate_in"
location = "main/gate/1/turnstiles/in"
[[device.doors]]
n = 2
device = "gate_out"
location = "main/gate/1/turnstiles/out"

[[device]]
id = "acs_a"
driver = "hikvision_isapi"
location = "main/A/1"
host = "{doors_a}"
user = "admin"
password_file = "{data}/device.pass"
[[device.doors]]
n = 1
device = "door_a_1"
location = "main/A/1/east/main-entrance"
[[device.doors]]
n = 2
device = "door_a_2"
location = "main/A/1/east/stairs"
[[device.doors]]
n = 3
device = "door_a_3"
location = "main/A/1/west/side-exit"
[[device.doors]]
n = 4
device = "door_a_4"
location = "main/A/1/plant/server-room"
escape_route = false

[[device]]
id = "cameras_a"
driver = "onvif"
location = "main/A/1"
pull_timeout = "2s"
[[device.camera]]
device = "cam_a1_east"
location = "main/A/1/east"
xaddr = "{camera}"
user = "campusgw"
password_file = "{data}/device.pass"

[[device]]
id = "door_release_a"
driver = "modbus_rtu_over_tcp"
location = "main/A/1/west"
address = "{doors}"
poll_interval = "1s"
[[device.points]]
name = "main_entrance"
table = "coil"
address = 0
writable = true
[[device.points]]
name = "east_stairs"
table = "coil"
address = 1
writable = true

[[device]]
id = "power_meter"
driver = "modbus_tcp"
location = "main/A/1/plant"
address = "{meter}"
poll_interval = "1s"
request_timeout = "300ms"
offline_after = "4s"
[[device.points]]
name = "voltage"
table = "input_register"
address = 0
type = "f32"
unit = "V"
deadband = 1.0
[[device.points]]
name = "power"
table = "input_register"
address = 2
type = "f32"
unit = "kW"
deadband = 0.5

[[uplink]]
name = "fire_centre"
kind = "gb26875"
centres = ["{centre}"]
uitd_address = {SCHOOL_UITD}
centre_address = {CITY_CENTRE}

# GB/T 28181 to the police video platform (SIP over UDP: loopback needs no allow_plaintext)
[[uplink]]
name = "police_video"
kind = "gb28181"
platform = "{video}"
platform_id = "{VIDEO_PLATFORM}"
device_id = "{VIDEO_GATEWAY}"
password_file = "{data}/gb28181.pass"
bind = "127.0.0.1:0"
charset = "gb2312"
[[uplink.alarm_input]]
id = "34020000001340000001"
name = "门卫室一键报警"
device = "guard_room_panic"
[[uplink.alarm_input]]
id = "34020000001340000002"
name = "实验楼入侵"
device = "lab_intrusion"
[[uplink.camera]]
id = "34020000001320000001"
name = "A栋一楼东"
location = "main/A/1/east"

[[device]]
id = "canteen"
driver = "canteen"
location = "main"
listen = "127.0.0.1:{canteen_port}"
[[device.terminals]]
id = "canteen1-w01"
token_sha256 = "{till_hash}"

[[uplink]]
name = "card_platform"
kind = "card_platform"
url = "http://{card_platform}/v1/transactions"
changes_url = "http://{card_platform}/v1/changes"
token = "{DEMO_CARD_PLATFORM_TOKEN}"
ledger = "{data}/canteen-canteen.db"
poll = "5s"

[[device]]
id = "iclock"
driver = "zkteco_push"
location = "main"
listen = "127.0.0.1:{zk_port}"
request_delay = "1s"
[[device.controllers]]
sn = "DEMO-B-01"
device = "zk_b"
location = "main/B/1"
[[device.controllers.doors]]
n = 1
device = "zk_b_main"
location = "main/B/1/east/main-entrance"
boundary = "building:B"
[[device.controllers.doors]]
n = 2
device = "zk_b_store"
location = "main/B/1/east/store-room"
escape_route = false

[[device]]
id = "energy_bus_a"
driver = "dlt645"
location = "main/A/1/plant"
address = "{energy}"
baud = 9600
poll_interval = "5s"
time_sync = "1h"
[[device.meters]]
device = "meter_a101"
address = "{m1}"
points = ["energy_active_forward_total", "power_active_total", "voltage_a", "current_a"]
[[device.meters]]
device = "meter_a102"
address = "{m2}"

[[device]]
id = "boiler_temp"
driver = "modbus_tcp"
location = "main/A/1/plant"
address = "{boiler}"
poll_interval = "1s"
[[device.points]]
name = "water_temp"
table = "input_register"
address = 0
type = "i16"
scale = 0.1
unit = "°C"
deadband = 0.5
"#,
        data = data_dir.display(),
        panel = s.panel.local_addr(),
        doors = s.doors.local_addr(),
        meter = s.meter.local_addr(),
        boiler = s.boiler.local_addr(),
        fire_port = s.fire_port,
        dc09_port = s.dc09_port,
        arc = s.arc.local_addr(),
        spk1 = s.speakers[0].uri(),
        spk2 = s.speakers[1].uri(),
        gate = s.gate.base_url(),
        doors_a = s.doors_a.base_url(),
        camera = s.camera.xaddr(),
        centre = s.centre.local_addr(),
        video = s.video.addr(),
        zk_port = s.zk_port,
        canteen_port = s.canteen_port,
        till_hash = campusgw_canteen::sim::token_hash(DEMO_TILL_TOKEN),
        card_platform = s.card_platform.addr,
        energy = s.energy.local_addr(),
        m1 = ENERGY_METERS[0],
        m2 = ENERGY_METERS[1],
    )
}

/// The guard room panic button's account and AES-128 key (16 characters, the key is their
/// bytes; a demo key, not a secret).
const GUARD_ACCOUNT: &str = "1234";
const GUARD_KEY: &str = "demo-guard-key-1";
/// The lab building intrusion panel's account (plain).
const LAB_ACCOUNT: &str = "5678";

/// The guard room's one-button alarm: ADM-CID over TCP, encrypted.
fn guard_room(addr: SocketAddr) -> anyhow::Result<campusgw_dc09::sim::PanelConfig> {
    use campusgw_dc09::sim::{PanelConfig, Transport};
    let mut c = PanelConfig::new(Transport::Tcp, addr, GUARD_ACCOUNT);
    c.key = Some(campusgw_dc09::Key::parse(
        GUARD_KEY,
        campusgw_dc09::KeyEncoding::Text,
    )?);
    Ok(c)
}

/// The lab building's intrusion panel: SIA DCS over UDP, plain.
fn lab_panel(addr: SocketAddr) -> campusgw_dc09::sim::PanelConfig {
    campusgw_dc09::sim::PanelConfig::new(campusgw_dc09::sim::Transport::Udp, addr, LAB_ACCOUNT)
}

/// The panic button's minute: pressed at 0:12, reset at 0:18, NULL every 20 s.
fn guard_room_at(second: u64) -> Option<campusgw_dc09::sim::SimEvent> {
    use campusgw_dc09::sim::SimEvent;
    match second {
        12 => Some(SimEvent::cid(120, 1, 1)),
        18 => Some(SimEvent::ContactId {
            qualifier: campusgw_dc09::Qualifier::Restore,
            code: 120,
            partition: 1,
            zone: 1,
        }),
        n if n % 20 == 0 => Some(SimEvent::Null),
        _ => None,
    }
}

/// The lab's minute: intrusion in zone 3 at 0:35, restore at 0:45, NULL every 20 s.
fn lab_at(second: u64) -> Option<campusgw_dc09::sim::SimEvent> {
    use campusgw_dc09::sim::SimEvent;
    match second {
        35 => Some(SimEvent::sia("1", "BA", "003")),
        45 => Some(SimEvent::sia("1", "BR", "003")),
        n if n % 20 == 10 => Some(SimEvent::Null),
        _ => None,
    }
}

/// A DC-09 panel on the demo's cycle: connects (retrying until the receiver is up), sends
/// what `at` says for each second of the minute, reconnects after a broken link.
async fn dc09_panel(
    config: campusgw_dc09::sim::PanelConfig,
    at: fn(u64) -> Option<campusgw_dc09::sim::SimEvent>,
    stop: CancellationToken,
) {
    use campusgw_dc09::sim::PanelSim;
    let mut sim: Option<PanelSim> = None;
    let mut t = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // A send waiting for its ACK must not make the script skip or bunch up seconds.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! { _ = tick.tick() => {}, () = stop.cancelled() => return }
        if sim.is_none() {
            sim = PanelSim::connect(config.clone()).await.ok();
        }
        if let (Some(p), Some(event)) = (sim.as_mut(), at(t % 60)) {
            let sent = tokio::select! { r = p.send(&event) => r, () = stop.cancelled() => return };
            match sent {
                Ok(outcome) => tracing::debug!(?outcome, account = %config.account, "dc09 panel"),
                Err(e) => {
                    tracing::debug!(%e, account = %config.account, "dc09 panel link lost");
                    sim = None;
                }
            }
        }
        t += 1;
    }
}

/// The building's UITD: connects (retrying until the listener is up), heartbeats, and
/// reports a smoke detector's alarm, a fault and the reset on the demo's cycle.
async fn uitd_script(port: u16, stop: CancellationToken) {
    use campusgw_gb26875::codec::ComponentAddress;
    use campusgw_gb26875::sim::{SimConfig, UitdSim};
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let detector = ComponentAddress::from_parts(10, 2);
    let mut sim = None;
    let mut t = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! { _ = tick.tick() => {}, () = stop.cancelled() => return }
        if sim.is_none() {
            sim = UitdSim::connect(addr, SimConfig::new(889, 88888))
                .await
                .ok();
        }
        if let Some(u) = &sim {
            let delivery = match t % 60 {
                8 => Some(u.fire_alarm(detector, "一层东侧走廊感烟探测器").await),
                15 => Some(u.fault(detector, "一层东侧走廊感烟探测器").await),
                22 => Some(u.reset(detector).await),
                n if n % 20 == 0 => Some(u.heartbeat().await),
                _ => None,
            };
            if let Some(d) = delivery {
                tracing::debug!(?d, "uitd upload");
            }
        }
        t += 1;
    }
}

async fn script(s: Sims, stop: CancellationToken) {
    use campusgw_modbus::WordOrder;
    use campusgw_modbus::sim::RegisterTable;
    let mut t = 0u64;
    let mut arc_seen = 0;
    let mut centre_seen = 0;
    let mut video_seen = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut till = campusgw_canteen::sim::SimTerminal::new(
        SocketAddr::from(([127, 0, 0, 1], s.canteen_port)),
        "canteen1-w01",
        DEMO_TILL_TOKEN,
    );
    till.give_up_after = Duration::from_secs(3);
    loop {
        tokio::select! { _ = tick.tick() => {}, () = stop.cancelled() => return }
        let phase = t % 60;
        let wobble = ((t as f32) * 0.7).sin();
        s.meter.set_f32(
            RegisterTable::Input,
            0,
            230.0 + 3.0 * wobble,
            WordOrder::Big,
        );
        s.meter
            .set_f32(RegisterTable::Input, 2, 42.0 + 6.0 * wobble, WordOrder::Big);
        s.boiler
            .set_input_register(0, (650.0 + 20.0 * wobble) as i16 as u16);
        match phase {
            // A student's face passes the gate turnstile (major 5, minor 0x4b: face passed).
            3 => {
                s.gate.access(5, 0x4b, 1, "S1001", "");
            }
            5 => s.panel.set_discrete_input(0, true),
            20 => s.panel.set_discrete_input(0, false),
            // Building A's side exit forced open (major 5, minor 0x1b).
            25 => {
                s.doors_a.access(5, 0x1b, 3, "", "");
            }
            30 => {
                s.meter.set_silent(true);
                s.camera
                    .set_property(campusgw_onvif::sim::TOPIC_FIELD, "IsInside", true);
            }
            35 => s
                .camera
                .set_property(campusgw_onvif::sim::TOPIC_FIELD, "IsInside", false),
            40 => {
                s.meter.set_silent(false);
                s.camera.cross_line();
            }
            // Lunch at the canteen: a meal on a student's card, then a card the list does
            // not know (declined); the card platform receives both.
            12 | 46 => {
                let card = if phase == 12 {
                    campusgw_canteen::sim::card(7)
                } else {
                    campusgw_canteen::proto::CardKey::Number("99999".into())
                };
                if let Ok(sold) = till.sell(&card, 850).await {
                    say!(
                        "  canteen till: {} (balance {:?} cents)",
                        sold.answer.result,
                        sold.answer.balance_cents
                    );
                }
            }
            // A student enters building B through its ZKTeco-controlled main entrance
            // (event 0: normal verify, opened; in).
            8 => {
                if let Some(zk) = &s.zk_b {
                    zk.access(1, 0, "S1002", 0).await;
                }
            }
            _ => {}
        }
        let arc_now = s.arc.received();
        for m in arc_now.iter().skip(arc_seen) {
            say!("  police ARC acknowledged: {}", arc_line(m));
        }
        arc_seen = arc_now.len();
        let uploads = s.centre.uploads();
        for r in uploads.iter().skip(centre_seen) {
            say!(
                "  city fire centre confirmed upload #{} from UITD {}: type {} ({} bytes)",
                r.frame.serial,
                SCHOOL_UITD,
                r.frame.data.first().copied().unwrap_or(0),
                r.frame.data.len()
            );
        }
        centre_seen = uploads.len();
        let video = s.video.state().alarms;
        for a in video.iter().skip(video_seen) {
            say!(
                "  police video platform confirmed alarm SN {} from {}: priority {}, {}",
                a.sn.unwrap_or(0),
                a.device_id,
                a.priority,
                a.description
            );
        }
        video_seen = video.len();
        if phase == 15 {
            for (i, spk) in s.speakers.iter().enumerate() {
                let h = spk.heard();
                say!(
                    "  speaker {} (building A, 1F): {} call(s) answered, {} RTP packets heard",
                    i + 1,
                    h.answered,
                    h.rtp.packets
                );
            }
            say!(
                "  doors of building A: {:?}; gate: {:?}",
                s.doors_a.door_states(),
                s.gate.door_states()
            );
        }
        t += 1;
    }
}

/// The default school pack, shipped in the binary.
const PACK: [(&str, &str); 3] = [
    ("fire.toml", include_str!("../../rules/pack/fire.toml")),
    (
        "security.toml",
        include_str!("../../rules/pack/security.toml"),
    ),
    (
        "operations.toml",
        include_str!("../../rules/pack/operations.toml"),
    ),
];

/// The demo's own linkage: its door release and siren are Modbus relays.
const DEMO_RULES: &str = r#"
[[rule]]
id = "demo_fire_relays"
description = "Confirmed fire (two alarm devices in a zone within 60 s): release building A's door relays and sound the siren and strobe"
trigger = { kinds = ["fire.alarm"] }
pattern = { type = "confirm", devices = 2, within = "60s" }
group_by = "zone"
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:door_release_a"
args = { point = "main_entrance", on = true }
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:door_release_a"
args = { point = "east_stairs", on = true }
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:fire_panel_io"
args = { point = "siren", on = true }
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:fire_panel_io"
args = { point = "strobe", on = true }
"#;

fn write_rules(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in PACK {
        std::fs::write(dir.join(name), text)?;
    }
    std::fs::write(dir.join("demo.toml"), DEMO_RULES)
}

/// `ADM-CID 120 zone 1 门卫室一键报警 (encrypted)` from a dc09 event (or its `reason`).
fn dc09_line(payload: &serde_json::Value) -> String {
    let Some(format) = payload["format"].as_str() else {
        return payload["reason"].as_str().unwrap_or("").to_owned();
    };
    let mut line = format!("{format} {}", payload["code"].as_str().unwrap_or("?"));
    if let Some(z) = payload["zone"].as_u64() {
        line.push_str(&format!(" zone {z}"));
    }
    if let Some(name) = payload["zone_name"].as_str() {
        line.push_str(&format!(" {name}"));
    }
    if payload["encrypted"] == true {
        line.push_str(" (encrypted)");
    }
    line
}

/// `ADM-CID #0003 account 5A01 {"format":"contact_id",...}` for a message the ARC received.
fn arc_line(m: &campusgw_dc09::Message) -> String {
    format!(
        "{} #{:04} account {} {}",
        m.id.as_str(),
        m.sequence.value(),
        m.account.as_number().unwrap_or("?"),
        serde_json::to_string(&m.data).unwrap_or_default()
    )
}

/// `boiler_temp = 65.2 °C, power = 12.0 kW` from a `sensor.readings` batch.
fn readings_line(payload: &serde_json::Value) -> String {
    let Some(points) = payload["points"].as_object() else {
        return String::new();
    };
    points
        .iter()
        .map(|(name, v)| {
            let unit = payload["units"][name.as_str()].as_str().unwrap_or("");
            format!("{name} = {:.1} {unit}", v.as_f64().unwrap_or(f64::NAN))
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn print_events(
    mut feed: tokio::sync::broadcast::Receiver<Arc<Event>>,
    stop: CancellationToken,
) {
    loop {
        let ev = tokio::select! {
            r = feed.recv() => match r { Ok(e) => e, Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => { say!("  ({n} events not shown)"); continue }, Err(_) => return },
            () = stop.cancelled() => return,
        };
        let detail = match ev.kind.as_str() {
            "sensor.reading" => format!(
                "{} = {:.1} {}",
                ev.payload["point"].as_str().unwrap_or("?"),
                ev.payload["value"].as_f64().unwrap_or(f64::NAN),
                ev.payload["unit"].as_str().unwrap_or("")
            ),
            "sensor.readings" => readings_line(&ev.payload),
            "command.result" => format!(
                "{} {} {}",
                ev.payload["command"]["kind"].as_str().unwrap_or("?"),
                ev.payload["command"]["args"]["point"]
                    .as_str()
                    .unwrap_or(""),
                ev.payload["result"]["status"].as_str().unwrap_or("?")
            ),
            _ if ev.source.driver.as_str() == "dc09" => dc09_line(&ev.payload),
            k if k.starts_with("alarm.") => format!(
                "[{}] {}",
                ev.payload["severity"].as_str().unwrap_or("?"),
                ev.payload["title"].as_str().unwrap_or("")
            ),
            _ => ev
                .payload
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_owned(),
        };
        say!(
            "#{:<6} {:<12} {:<18} {:<15} {:<16} {detail}",
            ev.seq,
            ev.class.as_str(),
            ev.kind.as_str(),
            ev.source.device.as_str(),
            ev.location.to_string()
        );
    }
}
