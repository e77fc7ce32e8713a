//! The driver against its simulator on 127.0.0.1:0. Every await is under a deadline;
//! waits are on conditions (events, health, simulator request counts), never bare sleeps.

mod common;

use std::time::Duration;

use campusgw_modbus::sim::{RegisterTable, Simulator};
use campusgw_modbus::{ModbusRtuOverTcpConfig, ModbusTcpConfig, Table, WordOrder};
use campusgw_sdk::{CommandStatus, DeviceHealth, DriverConfig};
use common::{
    T, events_of, register_write, relay_set, spawn_driver, wait_health_after, wait_polls, within,
};

/// The request timeout of tests whose device always answers: generous, so a loaded CI
/// machine never makes a slow answer look like a silent device.
const ANSWERS: &str = "5s";
/// The request timeout of tests that make the device silent or garbled on purpose: short,
/// so the driver notices within the test's wait.
const TIMES_OUT: &str = "500ms";

const POINTS: &str = r#"
poll_interval = "50ms"
[[points]]
name = "fire_alarm_out"
table = "discrete_input"
address = 3
on_kind = "fire.alarm"
off_kind = "fire.reset"
class = "life_safety"
[[points]]
name = "boiler_temp"
table = "input_register"
address = 10
type = "f32"
word_order = "big"
deadband = 0.5
unit = "°C"
[[points]]
name = "siren"
table = "coil"
address = 0
writable = true
[[points]]
name = "setpoint"
table = "holding_register"
address = 20
type = "i16"
scale = 0.1
writable = true
"#;

fn tcp_config(sim: &Simulator) -> ModbusTcpConfig {
    tcp_config_with(sim, ANSWERS)
}

fn tcp_config_with(sim: &Simulator, request_timeout: &str) -> ModbusTcpConfig {
    toml::from_str(&format!(
        "address = \"{}\"\nrequest_timeout = \"{request_timeout}\"\n{POINTS}",
        sim.local_addr()
    ))
    .expect("test config parses")
}

#[tokio::test]
async fn discrete_input_rising_edge_emits_fire_alarm_and_falling_edge_fire_reset() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, driver) = spawn_driver(&tcp_config(&sim));
        wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;
        wait_polls(&sim, 2).await;
        assert!(
            events_of(&host, "fire.alarm").is_empty(),
            "an inactive input at start is not an alarm"
        );

        sim.set_discrete_input(3, true);
        let alarm = host.wait_for_kind("fire.alarm", T).await;
        assert_eq!(alarm.class, campusgw_sdk::Class::LifeSafety);
        assert_eq!(alarm.payload["point"], "fire_alarm_out");
        assert_eq!(alarm.payload["table"], "discrete_input");
        assert_eq!(alarm.payload["address"], 3);
        assert_eq!(alarm.payload["value"], true);

        sim.set_discrete_input(3, false);
        let reset = host.wait_for_kind("fire.reset", T).await;
        assert_eq!(reset.payload["value"], false);
        assert!(reset.seq > alarm.seq);
        wait_polls(&sim, 2).await;
        assert_eq!(
            events_of(&host, "fire.alarm").len(),
            1,
            "a steady state is reported once"
        );
        host.shutdown();
        driver
            .await
            .expect("driver task")
            .expect("driver ends cleanly");
    })
    .await;
}

#[tokio::test]
async fn an_alarm_already_active_at_start_is_reported() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        sim.set_discrete_input(3, true);
        let (host, _driver) = spawn_driver(&tcp_config(&sim));
        let alarm = host.wait_for_kind("fire.alarm", T).await;
        assert_eq!(alarm.payload["value"], true);
        assert!(events_of(&host, "fire.reset").is_empty());
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn register_readings_respect_the_deadband() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        sim.set_f32(RegisterTable::Input, 10, 20.0, WordOrder::Big);
        let (host, _driver) = spawn_driver(&tcp_config(&sim));
        let first = common::wait_for_point(&host, "boiler_temp", 1).await;
        assert_eq!(first.class, campusgw_sdk::Class::Telemetry);
        assert_eq!(first.payload["point"], "boiler_temp");
        assert_eq!(first.payload["value"], 20.0);
        assert_eq!(first.payload["unit"], "°C");

        sim.set_f32(RegisterTable::Input, 10, 20.25, WordOrder::Big);
        wait_polls(&sim, 3).await;
        assert_eq!(
            common::readings_of(&host, "boiler_temp").len(),
            1,
            "0.25 is inside the 0.5 deadband"
        );

        sim.set_f32(RegisterTable::Input, 10, 20.5, WordOrder::Big);
        common::wait_for_point(&host, "boiler_temp", 2).await;
        let readings = common::readings_of(&host, "boiler_temp");
        assert_eq!(readings[1].payload["value"], 20.5);
        assert_eq!(readings[1].payload["raw"], 20.5);
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn relay_set_and_register_write_reach_the_device() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, _driver) = spawn_driver(&tcp_config(&sim));
        wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;

        let r = host.command(relay_set("siren", true), "dev", T).await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        assert!(sim.coil(0));
        let r = host.command(relay_set("siren", false), "dev", T).await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        assert!(!sim.coil(0));

        let r = host
            .command(register_write("setpoint", -21.5), "dev", T)
            .await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        assert_eq!(sim.holding_register(20), (-215i16).cast_unsigned());
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn bad_commands_are_rejected_without_touching_the_device() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, _driver) = spawn_driver(&tcp_config(&sim));
        wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;
        let cases = [
            (relay_set("sirne", true), "did you mean \"siren\""),
            (relay_set("fire_alarm_out", true), "needs a coil point"),
            (relay_set("setpoint", true), "needs a coil point"),
            (register_write("setpoint", 1e9), "outside the I16 range"),
            (
                register_write("boiler_temp", 1.0),
                "needs a holding_register point",
            ),
            (
                campusgw_sdk::Command::new(
                    campusgw_sdk::CommandKind::RELAY_SET,
                    common::target(),
                    serde_json::json!({"point": "siren"}),
                    "test",
                ),
                "missing boolean argument",
            ),
        ];
        for (cmd, why) in cases {
            let r = host.command(cmd, "dev", T).await;
            assert_eq!(r.status, CommandStatus::Rejected, "{why}: {}", r.detail);
            assert!(r.detail.contains(why), "{why}: {}", r.detail);
        }
        // A kind Modbus takes no command of is not a refusal of this device's.
        let unlock = campusgw_sdk::Command::new(
            campusgw_sdk::CommandKind::DOOR_UNLOCK,
            common::target(),
            serde_json::json!({"point": "siren"}),
            "test",
        );
        let r = host.command(unlock, "dev", T).await;
        assert_eq!(r.status, CommandStatus::Unsupported, "{}", r.detail);
        assert!(r.detail.contains("unsupported command"), "{}", r.detail);
        assert!(!sim.coil(0));
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn an_exception_rejects_the_command_and_degrades_health() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, _driver) = spawn_driver(&tcp_config(&sim));
        wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;

        sim.set_exception(Table::Coil, 0, Some(4));
        let r = host.command(relay_set("siren", true), "dev", T).await;
        assert_eq!(r.status, CommandStatus::Rejected, "{}", r.detail);
        assert!(r.detail.contains("exception 0x04"), "{}", r.detail);
        let mark = wait_health_after(&host, 0, |h| matches!(h, DeviceHealth::Degraded(_))).await;
        // the next clean poll heals it
        let mark = wait_health_after(&host, mark, |h| *h == DeviceHealth::Online).await;

        sim.set_exception(Table::DiscreteInput, 3, Some(2));
        sim.set_exception(Table::Coil, 0, None);
        let mark = wait_health_after(&host, mark, |h| matches!(h, DeviceHealth::Degraded(_))).await;
        sim.set_exception(Table::DiscreteInput, 3, None);
        wait_health_after(&host, mark, |h| *h == DeviceHealth::Online).await;
        // the link was kept: an exception is the device's answer, not a transport fault
        assert_eq!(sim.connections(), 1);
        assert!(
            !host
                .health_reports()
                .iter()
                .any(|(_, h)| matches!(h, DeviceHealth::Offline(_)))
        );
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn a_silent_device_times_out_goes_offline_and_recovers() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, _driver) = spawn_driver(&tcp_config_with(&sim, TIMES_OUT));
        let mark = wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;

        sim.set_silent(true);
        let mark = wait_health_after(
            &host,
            mark,
            |h| matches!(h, DeviceHealth::Offline(why) if why.contains("no answer")),
        )
        .await;
        let r = host.command(relay_set("siren", true), "dev", T).await;
        assert_ne!(r.status, CommandStatus::Succeeded, "{}", r.detail);

        sim.set_silent(false);
        wait_health_after(&host, mark, |h| *h == DeviceHealth::Online).await;
        sim.set_discrete_input(3, true);
        host.wait_for_kind("fire.alarm", T).await;
        assert!(sim.connections() >= 2, "the timed-out link was replaced");
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn garbage_and_dropped_connections_never_wedge_the_poller() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, driver) = spawn_driver(&tcp_config_with(&sim, TIMES_OUT));
        let mark = wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;

        sim.set_garbage(true);
        let mark = wait_health_after(&host, mark, |h| matches!(h, DeviceHealth::Offline(_))).await;
        sim.set_garbage(false);
        let mark = wait_health_after(&host, mark, |h| *h == DeviceHealth::Online).await;

        let before = sim.connections();
        sim.drop_connections();
        wait_health_after(&host, mark, |h| *h == DeviceHealth::Online).await;
        sim.set_discrete_input(3, true);
        host.wait_for_kind("fire.alarm", T).await;
        assert!(sim.connections() > before);
        assert!(!driver.is_finished());
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn a_refusing_journal_loses_no_alarm() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let (host, _driver) = spawn_driver(&tcp_config(&sim));
        wait_health_after(&host, 0, |h| *h == DeviceHealth::Online).await;

        host.fail_writes(Some("disk full"));
        sim.set_discrete_input(3, true);
        wait_polls(&sim, 3).await;
        assert!(events_of(&host, "fire.alarm").is_empty());

        host.fail_writes(None);
        host.wait_for_kind("fire.alarm", T).await;
        wait_polls(&sim, 2).await;
        assert_eq!(
            events_of(&host, "fire.alarm").len(),
            1,
            "delivered once, not once per refused poll"
        );
        host.shutdown();
    })
    .await;
}

#[tokio::test]
async fn commands_fail_while_the_device_is_unreachable_and_shutdown_is_prompt() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let cfg = tcp_config(&sim);
        drop(sim); // nothing listens there any more
        let (host, driver) = spawn_driver(&cfg);
        wait_health_after(
            &host,
            0,
            |h| matches!(h, DeviceHealth::Offline(why) if why.contains("cannot connect")),
        )
        .await;
        let r = host.command(relay_set("siren", true), "dev", T).await;
        assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
        host.shutdown();
        // Prompt means "without waiting out a reconnect back-off"; the bound is generous
        // for a loaded CI machine.
        tokio::time::timeout(Duration::from_secs(5), driver)
            .await
            .expect("driver stopped within 5 s of shutdown")
            .expect("driver task")
            .expect("clean end");
    })
    .await;
}

#[tokio::test]
async fn rtu_over_tcp_kind_polls_and_writes_through_rtu_framing() {
    within(async {
        let sim = Simulator::start_rtu_over_tcp().await.expect("sim");
        sim.set_discrete_input(3, true);
        sim.set_f32(RegisterTable::Input, 10, 7.5, WordOrder::Big);
        let cfg: ModbusRtuOverTcpConfig = toml::from_str(&format!(
            "address = \"{}\"\nunit = 7\nrequest_timeout = \"{ANSWERS}\"\n{POINTS}",
            sim.local_addr()
        ))
        .expect("config");
        assert!(cfg.validate(&campusgw_sdk::FieldPath::root()).is_empty());
        let (host, _driver) = spawn_driver(&cfg);
        host.wait_for_kind("fire.alarm", T).await;
        let reading = common::wait_for_point(&host, "boiler_temp", 1).await;
        assert_eq!(reading.payload["value"], 7.5);
        let r = host.command(relay_set("siren", true), "dev", T).await;
        assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
        assert!(sim.coil(0));
        host.shutdown();
    })
    .await;
}
