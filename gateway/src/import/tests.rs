#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;

use super::*;

const BASE: &str = r#"
[gateway]
id = "school-1"
name = "Test school"
data_dir = "/tmp/campusgw-import-test"

[console]
listen = "127.0.0.1:0"

[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = ["east"]

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:9000"
centre_address = 88888
[[device.uitd]]
address = 889
device = "uitd_a"
[[device.uitd.components]]
address = "1-1"
system_address = 1
location = { building = "A", floor = "1", zone = "east", point = "old" }
[[device.uitd.components]]
address = "9-9"
location = { building = "A", floor = "1" }
"#;

const ZH: &str = "传输装置,系统,回路,地址,类型,楼栋,楼层,区域";

/// A detector list like a commissioning tool's: `n` detectors on loops of 200.
fn detector_csv(header: &str, n: usize) -> String {
    let mut s = format!("{header}\r\n");
    for i in 0..n {
        s.push_str(&format!(
            "uitd_a,1,{},{},感烟,A,{},east\r\n",
            i / 200 + 1,
            i % 200 + 1,
            i % 6 + 1
        ));
    }
    s
}

fn run(csv: &str) -> Preview {
    let sheet = Sheet::read(csv.as_bytes(), Format::Csv).unwrap();
    preview(BASE, Path::new("gateway.toml"), &sheet).unwrap()
}

#[test]
fn five_thousand_detectors_from_csv_preview_cleanly_and_pass_the_config_check() {
    let p = run(&detector_csv(ZH, 5000));
    assert_eq!(p.table, TableKind::Detectors);
    assert_eq!(p.rows, 5000);
    assert_eq!(p.errors, vec![]);
    // 1-1 stays (its location changes), 9-9 goes, 4,999 are new.
    assert_eq!(p.diff.added.len(), 4999);
    assert_eq!(p.diff.changed, vec!["uitd_a 1:1-1"]);
    assert_eq!(p.diff.removed, vec!["uitd_a *:9-9"]);
    let cfg =
        crate::config::parse(&p.merged, Path::new("gateway.toml")).expect("merged config is valid");
    assert_eq!(cfg.devices.len(), 1);
}

#[test]
fn five_thousand_detectors_from_xlsx_read_the_same_as_from_csv() {
    let csv = detector_csv(ZH, 5000);
    let mut book = rust_xlsxwriter::Workbook::new();
    let ws = book.add_worksheet();
    for (r, line) in csv.lines().enumerate() {
        for (c, cell) in line.split(',').enumerate() {
            // Numbers as numbers, as a vendor's tool writes them.
            match cell.parse::<f64>() {
                Ok(n) if r > 0 => ws.write_number(r as u32, c as u16, n).map(|_| ()),
                _ => ws.write_string(r as u32, c as u16, cell).map(|_| ()),
            }
            .unwrap();
        }
    }
    let bytes = book.save_to_buffer().unwrap();
    let from_xlsx = Sheet::read(&bytes, Format::Xlsx).unwrap();
    let from_csv = Sheet::read(csv.as_bytes(), Format::Csv).unwrap();
    assert_eq!(from_xlsx, from_csv);
    let p = preview(BASE, Path::new("gateway.toml"), &from_xlsx).unwrap();
    assert_eq!((p.rows, p.errors.len()), (5000, 0));
}

#[test]
fn english_headers_in_any_case_are_accepted() {
    let p = run(&detector_csv(
        "UITD,System,Loop,Address,Type,Building,Floor,Zone",
        3,
    ));
    assert_eq!((p.rows, p.errors.len()), (3, 0), "{:?}", p.errors);
}

#[test]
fn each_bad_cell_is_reported_at_its_own_row_and_column() {
    let mut csv = detector_csv(ZH, 10);
    // Row 12: a system address that is not a number (column B, 系统), judged by serde.
    csv.push_str("uitd_a,x,5,1,感烟,A,1,east\r\n");
    // Row 13: a loop beyond 16 bits (column D, 地址), judged by the gb26875 driver.
    csv.push_str("uitd_a,1,70000,1,感烟,A,1,east\r\n");
    // Row 14: the same address as row 2 (column D).
    csv.push_str("uitd_a,1,1,1,感烟,A,1,east\r\n");
    // Row 15: a UITD the config does not have (column A), with a suggestion.
    csv.push_str("uitd_b,1,1,2,感烟,A,1,east\r\n");
    let p = run(&csv);
    let at: Vec<(usize, Option<usize>, Option<&str>)> = p
        .errors
        .iter()
        .map(|e| (e.row, e.column, e.header.as_deref()))
        .collect();
    assert!(
        at.contains(&(15, Some(1), Some("传输装置"))),
        "{:#?}",
        p.errors
    );
    assert!(
        p.errors
            .iter()
            .any(|e| e.row == 15 && e.message.contains("did you mean \"uitd_a\""))
    );
    // The config check runs once the importer's own checks pass: fix row 15 and look again.
    let csv = csv.replace("uitd_b,1,1,2,", "uitd_a,1,60,2,");
    let p = run(&csv);
    assert_eq!(
        cells(&p),
        vec![(12, Some(2), Some("系统"))],
        "{:#?}",
        p.errors
    );
    assert!(
        p.errors[0].message.contains("expected u8"),
        "{}",
        p.errors[0].message
    );
    // A type error stops that device's table before its driver looks at it (as in
    // check-config): with row 12 fixed, the driver's own findings appear.
    let p = run(&csv.replace("uitd_a,x,", "uitd_a,1,"));
    assert_eq!(
        cells(&p),
        vec![(13, Some(4), Some("地址")), (14, Some(4), Some("地址"))],
        "{:#?}",
        p.errors
    );
    assert!(
        p.errors[0].message.contains("\"70000-1\""),
        "{}",
        p.errors[0].message
    );
    assert!(
        p.errors[1].message.contains("listed twice"),
        "{}",
        p.errors[1].message
    );
}

fn cells(p: &Preview) -> Vec<(usize, Option<usize>, Option<&str>)> {
    p.errors
        .iter()
        .map(|e| (e.row, e.column, e.header.as_deref()))
        .collect()
}

#[test]
fn an_unknown_header_is_named_with_its_column_and_a_suggestion() {
    let p = run("传输装置,系统,回路,地扯\nuitd_a,1,1,1\n");
    assert_eq!(p.errors[0].row, 1);
    assert_eq!(p.errors[0].column, Some(4));
    assert!(
        p.errors[0].message.contains("地扯"),
        "{}",
        p.errors[0].message
    );
}

#[test]
fn location_rows_add_missing_buildings_floors_and_zones_to_the_tree() {
    let p = run(
        "校区,楼栋,楼层,区域\nmain,A,1,east\nmain,A,1,west\nmain,B,3,north\n\nmain,B,3,north\n",
    );
    assert_eq!(p.table, TableKind::Locations);
    assert_eq!(p.rows, 4, "the blank row is not counted");
    assert_eq!(p.errors, vec![]);
    assert_eq!(
        p.diff.added,
        vec!["main/A/1/west", "main/B", "main/B/3", "main/B/3/north"]
    );
    let cfg = crate::config::parse(&p.merged, Path::new("gateway.toml")).unwrap();
    assert_eq!(cfg.campuses[0].building[1].floor[0].zones, vec!["north"]);
}

#[test]
fn a_bad_location_id_is_reported_at_its_row() {
    let p = run("campus,building,floor\nmain,C/D,1\n");
    assert_eq!(p.errors.len(), 1, "{:#?}", p.errors);
    assert_eq!((p.errors[0].row, p.errors[0].column), (2, Some(2)));
}

/// A campus with building A (floors 1-5, zones east / west), one ZKTeco PUSH server with
/// `controllers` controllers (`zk_0` has an old door 1 and a door 9 the file drops), and a
/// Hikvision controller.
fn door_base(controllers: usize) -> String {
    let mut s = String::from(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"/tmp/campusgw-import-test\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[[campus]]\nid = \"main\"\n[[campus.building]]\nid = \"A\"\n",
    );
    for f in 1..=5 {
        s.push_str(&format!(
            "[[campus.building.floor]]\nid = \"{f}\"\nzones = [\"east\", \"west\"]\n"
        ));
    }
    s.push_str("\n[[device]]\nid = \"zk_push\"\ndriver = \"zkteco_push\"\nlocation = \"main\"\nlisten = \"127.0.0.1:8088\"\n");
    for i in 0..controllers {
        s.push_str(&format!(
            "[[device.controllers]]\nsn = \"ZK{i:05}\"\ndevice = \"zk_{i}\"\nlocation = \"main/A\"\n"
        ));
        if i == 0 {
            s.push_str("[[device.controllers.doors]]\nn = 1\ndevice = \"zk_0_door1\"\nlocation = \"main/A/1/east/old\"\n");
            s.push_str("[[device.controllers.doors]]\nn = 9\ndevice = \"zk_0_door9\"\nlocation = \"main/A/1/east/gone\"\n");
        }
    }
    s.push_str("\n[[device]]\nid = \"acs_gate\"\ndriver = \"hikvision_isapi\"\nlocation = \"main/A\"\nhost = \"https://192.0.2.20\"\nuser = \"campusgw\"\npassword_file = \"/etc/campusgw/secrets/acs_gate\"\n");
    s
}

const DOOR_ZH: &str = "控制器,门号,门设备,门名称,楼栋,楼层,区域,疏散通道,边界,方向";

/// `n` doors, ten per controller, as a commissioning tool lists them.
fn door_csv(header: &str, n: usize) -> String {
    let mut s = format!("{header}\r\n");
    for i in 0..n {
        let (c, d) = (i / 10, i % 10 + 1);
        let (boundary, dir) = if d == 1 { ("校园", "进") } else { ("", "") };
        s.push_str(&format!(
            "zk_{c},{d},,{c}号门{d},A,{},east,是,{boundary},{dir}\r\n",
            i % 5 + 1
        ));
    }
    s
}

fn run_on(base: &str, csv: &str) -> Preview {
    let sheet = Sheet::read(csv.as_bytes(), Format::Csv).unwrap();
    preview(base, Path::new("gateway.toml"), &sheet).unwrap()
}

#[test]
fn two_thousand_doors_preview_cleanly_and_pass_the_config_check() {
    let base = door_base(200);
    let p = run_on(&base, &door_csv(DOOR_ZH, 2000));
    assert_eq!(p.table, TableKind::Doors);
    assert_eq!(p.rows, 2000);
    assert_eq!(
        p.errors,
        vec![],
        "{:#?}",
        &p.errors[..p.errors.len().min(5)]
    );
    // zk_0's doors 1 and 9 change (their locations); the other 1,998 doors are new.
    assert_eq!(p.diff.added.len(), 1998, "{:?}", &p.diff.added[..3]);
    assert_eq!(p.diff.changed, vec!["zk_0 door 1", "zk_0 door 9"]);
    assert_eq!(p.diff.removed, Vec::<String>::new());
    let cfg =
        crate::config::parse(&p.merged, Path::new("gateway.toml")).expect("merged config is valid");
    assert_eq!(cfg.devices.len(), 2);
    // The generated door ids, the campus taken from the controller, the flags.
    let merged: toml::Table = toml::from_str(&p.merged).unwrap();
    let door = &merged["device"][0]["controllers"][3]["doors"][0];
    assert_eq!(door["device"].as_str(), Some("zk_3_door1"));
    assert_eq!(door["location"]["campus"].as_str(), Some("main"));
    assert_eq!(door["location"]["point"].as_str(), Some("3号门1"));
    assert_eq!(door["escape_route"].as_bool(), Some(true));
    assert_eq!(door["boundary"].as_str(), Some("campus"));
    assert_eq!(door["direction"].as_str(), Some("in"));
}

#[test]
fn a_door_table_with_english_headers_names_controllers_by_serial_and_hikvision_devices() {
    let base = door_base(2);
    let p = run_on(
        &base,
        "Controller,Door,Door_Device,Building,Floor,Zone,Escape_Route,Boundary\n\
         ZK00001,1,gate_in,A,1,west,no,building:A\n\
         acs_gate,1,acs_door_1,A,2,east,yes,\n",
    );
    assert_eq!(p.errors, vec![], "{:#?}", p.errors);
    // By controller in config order of kind: the Hikvision device's own doors first.
    assert_eq!(p.diff.added, vec!["acs_gate door 1", "zk_1 door 1"]);
    let merged: toml::Table = toml::from_str(&p.merged).unwrap();
    let zk = &merged["device"][0]["controllers"][1]["doors"][0];
    assert_eq!(zk["device"].as_str(), Some("gate_in"));
    assert_eq!(zk["escape_route"].as_bool(), Some(false));
    assert_eq!(zk["boundary"].as_str(), Some("building:A"));
    let hik = &merged["device"][1]["doors"][0];
    assert_eq!(hik["device"].as_str(), Some("acs_door_1"));
    assert_eq!(hik["location"]["floor"].as_str(), Some("2"));
}

#[test]
fn each_bad_door_cell_is_reported_at_its_own_row_and_column() {
    let base = door_base(3);
    let head = format!("{DOOR_ZH}\n");
    let good = "zk_0,1,,,A,1,east,是,,\n";
    // The importer's own checks: a yes/no that is neither (row 3, column H), a controller
    // the config lacks (row 4, column A, with a suggestion), a door without a number.
    let csv = format!(
        "{head}{good}zk_0,2,,,A,1,east,也许,,\nzk_9x,1,,,A,1,east,,,\nzk_1,,,,A,1,east,,,\n"
    );
    let p = run_on(&base, &csv);
    assert_eq!(
        cells(&p),
        vec![
            (3, Some(8), Some("疏散通道")),
            (4, Some(1), Some("控制器")),
            (5, Some(2), Some("门号")),
        ],
        "{:#?}",
        p.errors
    );
    assert!(
        p.errors[1].message.contains("did you mean"),
        "{}",
        p.errors[1].message
    );
    // Then the driver's checks, each mapped back: a door number beyond the controller's 10
    // (row 3), a bad boundary (row 5), a door number given twice (row 6).
    let bad_floor = "zk_1,1,,,A,9,east,,,\n";
    let csv = format!(
        "{head}{good}zk_0,11,,,A,1,east,,,\n{bad_floor}zk_1,2,,,A,1,east,,building:,\nzk_0,1,zk_0_again,,A,1,east,,,\n"
    );
    let p = run_on(&base, &csv);
    let mut at = cells(&p);
    at.sort();
    assert_eq!(
        at,
        vec![
            (3, Some(2), Some("门号")),
            (5, Some(9), Some("边界")),
            (6, Some(2), Some("门号")),
        ],
        "{:#?}",
        p.errors
    );
    // As in check-config, the driver's findings hide the location checks of its doors:
    // with those fixed, the floor the tree lacks (row 3 now), named by the door's id.
    let csv = format!("{head}{good}{bad_floor}zk_1,2,,,A,1,east,,building:A,\n");
    let p = run_on(&base, &csv);
    assert_eq!(
        cells(&p),
        vec![(3, Some(6), Some("楼层"))],
        "{:#?}",
        p.errors
    );
    assert!(
        p.errors[0].message.contains("unknown floor \"9\""),
        "{}",
        p.errors[0].message
    );
}

#[test]
fn a_column_of_another_table_is_refused_not_dropped() {
    let p = run_on(&door_base(1), "控制器,门号,地址\nzk_0,1,3\n");
    assert_eq!(
        cells(&p),
        vec![(1, Some(3), Some("地址"))],
        "{:#?}",
        p.errors
    );
    let p = run("传输装置,地址,疏散通道\nuitd_a,1,是\n");
    assert_eq!(
        cells(&p),
        vec![(1, Some(3), Some("疏散通道"))],
        "{:#?}",
        p.errors
    );
}
