use campusgw_sdk::{DriverConfig, FieldPath};

use super::*;

const EXAMPLE: &str = r#"
address = "127.0.0.1:5020"
unit = 1
poll_interval = "1s"
request_timeout = "500ms"
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
scale = 0.1
offset = 0.0
unit = "°C"
deadband = 0.5
[[points]]
name = "siren"
table = "coil"
address = 0
writable = true
"#;

fn tcp(text: &str) -> ModbusTcpConfig {
    toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
}

fn issues(cfg: &impl DriverConfig) -> Vec<String> {
    cfg.validate(&FieldPath::root().key("device").index(0))
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn with_point(point: &str) -> ModbusTcpConfig {
    tcp(&format!("address = \"h:502\"\n[[points]]\n{point}\n"))
}

#[test]
fn the_documented_example_is_valid_and_plans_two_reads() {
    let cfg = tcp(EXAMPLE);
    assert_eq!(issues(&cfg), Vec::<String>::new());
    assert_eq!(cfg.request_timeout.0, Duration::from_millis(500));
    let map = PointMap::compile(&cfg.points, &FieldPath::root()).expect("valid");
    // the siren has no kinds: written, not polled
    assert_eq!(map.blocks.len(), 2);
}

#[test]
fn unknown_keys_and_gateway_keys_are_refused_by_serde() {
    for key in [
        "id = \"x\"",
        "driver = \"modbus_tcp\"",
        "offline_after = \"10s\"",
        "adress = \"x\"",
    ] {
        let text = format!("address = \"h:502\"\n{key}\n");
        assert!(toml::from_str::<ModbusTcpConfig>(&text).is_err(), "{key}");
    }
    let bad_point = "address = \"h:502\"\n[[points]]\nname = \"a\"\ntable = \"coil\"\naddress = 1\nwritable = true\ncolour = 1\n";
    assert!(toml::from_str::<ModbusTcpConfig>(bad_point).is_err());
}

#[test]
fn validation_reports_every_point_problem_with_its_path() {
    let cases: &[(&str, &str)] = &[
        (
            "name = \"t\"\ntable = \"input_register\"\naddress = 65535\ntype = \"u32\"",
            "device[0].points[0].address: a U32 at address 65535 runs past",
        ),
        (
            "name = \"t\"\ntable = \"coil\"\naddress = 1\ntype = \"u16\"\non_kind = \"x.y\"\nclass = \"security\"",
            "device[0].points[0].type: `type` applies to registers only",
        ),
        (
            "name = \"t\"\ntable = \"discrete_input\"\naddress = 1",
            "device[0].points[0].on_kind: missing `on_kind`",
        ),
        (
            "name = \"t\"\ntable = \"discrete_input\"\naddress = 1\non_kind = \"fire.alarm\"",
            "device[0].points[0].class: missing `class`",
        ),
        (
            "name = \"t\"\ntable = \"discrete_input\"\naddress = 1\noff_kind = \"fire.reset\"\nclass = \"security\"",
            "device[0].points[0].on_kind: `off_kind` is set",
        ),
        (
            "name = \"t\"\ntable = \"discrete_input\"\naddress = 1\non_kind = \"Fire\"\nclass = \"security\"",
            "device[0].points[0].on_kind: invalid event kind",
        ),
        (
            "name = \"t\"\ntable = \"discrete_input\"\naddress = 1\non_kind = \"fire.alarm\"\nclass = \"urgent\"",
            "device[0].points[0].class: unknown class",
        ),
        (
            "name = \"t\"\ntable = \"discrete_input\"\naddress = 1\non_kind = \"fire.alarm\"\nclass = \"security\"\nwritable = true",
            "device[0].points[0].writable: a discrete_input is read-only",
        ),
        (
            "name = \"t\"\ntable = \"input_register\"\naddress = 1\nwritable = true",
            "device[0].points[0].writable: a input_register is read-only",
        ),
        (
            "name = \"t\"\ntable = \"input_register\"\naddress = 1\non_kind = \"fire.alarm\"",
            "device[0].points[0].on_kind: `on_kind` applies to coils",
        ),
        (
            "name = \"t\"\ntable = \"input_register\"\naddress = 1\nword_order = \"little\"",
            "device[0].points[0].word_order: `word_order` needs a 32-bit type",
        ),
        (
            "name = \"t\"\ntable = \"input_register\"\naddress = 1\nscale = 0.0",
            "device[0].points[0].scale: scale 0 must be",
        ),
        (
            "name = \"t\"\ntable = \"input_register\"\naddress = 1\ndeadband = -1.0",
            "device[0].points[0].deadband: deadband -1",
        ),
        (
            "name = \"\"\ntable = \"input_register\"\naddress = 1",
            "device[0].points[0].name: invalid point name",
        ),
    ];
    for (point, want) in cases {
        let got = issues(&with_point(point));
        assert!(
            got.iter().any(|i| i.starts_with(want)),
            "{point}\nwanted {want}\ngot {got:#?}"
        );
    }
}

#[test]
fn validation_reports_device_level_problems_all_at_once() {
    let cfg = tcp(
        "address = \"nohost\"\npoll_interval = \"0s\"\nrequest_timeout = \"0ms\"\n\
         [[points]]\nname = \"a\"\ntable = \"coil\"\naddress = 0\nwritable = true\n\
         [[points]]\nname = \"a\"\ntable = \"coil\"\naddress = 1\nwritable = true\n",
    );
    let got = issues(&cfg);
    for want in [
        "device[0].poll_interval: `poll_interval` must be greater than zero",
        "device[0].request_timeout: `request_timeout` must be greater than zero",
        "device[0].points[1].name: duplicate point name \"a\" (first used by points[0])",
        "device[0].address: invalid address \"nohost\"",
    ] {
        assert!(
            got.iter().any(|i| i == want || i.starts_with(want)),
            "wanted {want}\ngot {got:#?}"
        );
    }
    assert_eq!(got.len(), 4, "{got:#?}");
    assert_eq!(
        issues(&tcp("address = \"h:502\"")),
        vec!["device[0].points: no points configured: add at least one [[points]] entry"]
    );
}

#[test]
fn rtu_kinds_check_the_unit_range_and_serial_settings() {
    let point = "[[points]]\nname = \"s\"\ntable = \"coil\"\naddress = 0\nwritable = true\n";
    let rtu: ModbusRtuConfig = toml::from_str(&format!(
        "path = \"\"\nbaud = 0\nparity = \"even\"\ndata_bits = 9\nstop_bits = 3\nunit = 0\n{point}"
    ))
    .expect("parses");
    let got = issues(&rtu);
    for key in ["path", "baud", "data_bits", "stop_bits", "unit"] {
        assert!(
            got.iter()
                .any(|i| i.starts_with(&format!("device[0].{key}:"))),
            "{key}: {got:#?}"
        );
    }
    let ok: ModbusRtuConfig =
        toml::from_str(&format!("path = \"/dev/ttyUSB0\"\n{point}")).expect("parses");
    assert_eq!(issues(&ok), Vec::<String>::new());
    assert_eq!(
        (ok.baud, ok.parity, ok.data_bits, ok.stop_bits),
        (9600, Parity::None, 8, 1)
    );
    let over: ModbusRtuOverTcpConfig =
        toml::from_str(&format!("address = \"gw:4001\"\nunit = 248\n{point}")).expect("parses");
    assert_eq!(
        issues(&over),
        vec!["device[0].unit: unit 248 is out of range (1-247)"]
    );
}

#[test]
fn build_refuses_an_invalid_map_and_accepts_a_valid_one() {
    let cx = BuildContext {
        device: campusgw_sdk::DeviceId::new("panel").expect("id"),
        location: campusgw_sdk::Location::default(),
        data_dir: std::env::temp_dir(),
    };
    assert!(tcp(EXAMPLE).build(&cx).is_ok());
    assert!(
        with_point("name = \"t\"\ntable = \"discrete_input\"\naddress = 1")
            .build(&cx)
            .is_err()
    );
}
