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
