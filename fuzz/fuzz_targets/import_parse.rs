//! Feeds arbitrary bytes to the console's bulk import (an upload of `POST
//! /api/v1/import/preview`): read as CSV and as XLSX (`campusgw::import::Sheet`), and every
//! table that reads is previewed against a config with a UITD and a ZKTeco controller, so
//! the detector, door and location merges and the config check all see it. Nothing may
//! panic, and every problem must point inside the file (a row it has, a column its header
//! row has) or at row 0 (the file as a whole / the existing config).
#![no_main]

use std::path::Path;

use campusgw::import::{Format, Sheet, preview};
use libfuzzer_sys::fuzz_target;

const BASE: &str = r#"
[gateway]
id = "fuzz"
name = "fuzz"
data_dir = "/tmp/campusgw-fuzz-import"

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

[[device]]
id = "zk_push"
driver = "zkteco_push"
location = "main"
listen = "127.0.0.1:8088"
[[device.controllers]]
sn = "ZK00001"
device = "zk_gate"
location = "main/A"
"#;

fuzz_target!(|data: &[u8]| {
    for format in [Format::Csv, Format::Xlsx] {
        let Ok(sheet) = Sheet::read(data, format) else {
            continue;
        };
        let Ok(p) = preview(BASE, Path::new("gateway.toml"), &sheet) else {
            continue;
        };
        let width = sheet.rows.first().map_or(0, Vec::len);
        for e in &p.errors {
            assert!(
                e.row <= sheet.rows.len(),
                "row {} of {}",
                e.row,
                sheet.rows.len()
            );
            if let Some(c) = e.column {
                assert!(c >= 1 && c <= width.max(1), "column {c} of {width}");
            }
        }
    }
});
