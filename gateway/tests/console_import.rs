//! `campusgw import --preview FILE --config gateway.toml` on the box (issue 12 item 4):
//! the integrator's view of a bulk import, from the real binary. Writes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod cli_support;

use cli_support::{campusgw, write};

const CONFIG: &str = r#"
[gateway]
id = "school-1"
name = "Test school"
data_dir = "/tmp/campusgw-import-cli"

[console]
listen = "127.0.0.1:0"

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:9000"
centre_address = 88888
[[device.uitd]]
address = 889
device = "uitd_a"
"#;

#[test]
fn import_preview_lists_each_problem_by_row_and_column_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "gateway.toml", CONFIG);
    let csv = write(
        dir.path(),
        "detectors.csv",
        "传输装置,系统,回路,地址,类型,楼栋,楼层,区域\n\
         uitd_a,1,1,1,感烟,A,1,east\n\
         uitd_a,1,1,1,感烟,A,1,east\n",
    );
    let out = campusgw()
        .args(["import", "--preview"])
        .arg(&csv)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("detector table, 2 rows, 1 problems"),
        "{text}"
    );
    assert!(
        text.contains("row 3, column 4 (地址): component address \"1-1\" is listed twice"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        CONFIG,
        "preview writes nothing"
    );

    let clean = write(
        dir.path(),
        "ok.csv",
        "uitd,loop,address\nuitd_a,1,1\nuitd_a,1,2\n",
    );
    let out = campusgw()
        .args(["import", "--json", "--preview"])
        .arg(&clean)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"], 2);
    assert_eq!(
        v["diff"]["added"],
        serde_json::json!(["uitd_a *:1-1", "uitd_a *:1-2"])
    );
}
