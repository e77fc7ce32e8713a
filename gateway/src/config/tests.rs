use std::path::Path;

use super::*;

const GOOD: &str = r#"
[gateway]
id = "school-042"
name = "第一中学"
data_dir = "/var/lib/campusgw"

[gateway.journal]
retention = "7d"
quota = "512MiB"

[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = ["east", "west"]

[console]
listen = "127.0.0.1:8080"
"#;

fn problems(text: &str) -> Vec<(usize, String)> {
    match parse(text, Path::new("t.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .into_iter()
            .map(|(l, i)| (l, i.to_string()))
            .collect(),
    }
}

#[test]
fn a_good_config_parses_with_units_and_tree() {
    let c = parse(GOOD, Path::new("t.toml"))
        .map_err(|e| e.to_string())
        .unwrap();
    assert_eq!(c.gateway.id, "school-042");
    assert_eq!(c.gateway.journal.quota.0, 512 << 20);
    assert_eq!(c.gateway.journal.retention.0.as_secs(), 7 * 86_400);
    assert_eq!(c.campuses[0].building[0].floor[0].zones, ["east", "west"]);
}

#[test]
fn every_problem_is_reported_at_once_with_its_line() {
    let text = GOOD
        .replace("id = \"school-042\"", "id = \"school 042\"")
        .replace(
            "listen = \"127.0.0.1:8080\"",
            "listen = \"127.0.0.1:70000\"",
        )
        .replace("quota = \"512MiB\"", "quota = \"512 parsecs\"")
        + "\n[[device]]\nid = \"panel\"\ndriver = \"modbus_tpc\"\n\n[extra]\nx = 1\n";
    let p = problems(&text);
    let lines: Vec<usize> = p.iter().map(|(l, _)| *l).collect();
    let all = p
        .iter()
        .map(|(l, m)| format!("{l}: {m}\n"))
        .collect::<String>();
    assert!(p.len() >= 4, "{all}");
    assert!(
        all.contains("gateway.journal.quota") && all.contains("parsecs"),
        "{all}"
    );
    assert!(all.contains("console.listen"), "{all}");
    assert!(all.contains("unknown key \"extra\""), "{all}");
    assert!(
        all.contains("device[0].driver") && all.contains("unknown driver \"modbus_tpc\""),
        "{all}"
    );
    // Lines point at the offending keys.
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    assert!(lines.contains(&line_of("quota = ")), "{all}");
    assert!(lines.contains(&line_of("listen = ")), "{all}");
    assert!(lines.contains(&line_of("[extra]")), "{all}");
}

#[test]
fn a_syntax_error_names_its_line() {
    let text = format!("{GOOD}\n[[device]\nid = 1\n");
    let p = problems(&text);
    assert_eq!(p.len(), 1);
    assert_eq!(
        p[0].0,
        text.lines().position(|l| l == "[[device]").unwrap() + 1,
        "{p:?}"
    );
    assert!(p[0].1.contains("not valid TOML"));
}

#[test]
fn missing_sections_and_unknown_fields_are_named() {
    let p = problems("[gateway]\nid = \"a\"\nname = \"b\"\ndata_dir = \"/x\"\ncolour = \"red\"\n");
    let all = p
        .iter()
        .map(|(l, m)| format!("{l}: {m}\n"))
        .collect::<String>();
    assert!(all.contains("missing [console] section"), "{all}");
    assert!(all.contains("unknown field `colour`"), "{all}");
}

#[test]
fn locations_are_checked_against_the_tree_with_suggestions() {
    let mut issues = Vec::new();
    let c: Vec<CampusDef> = toml::from_str::<toml::Table>(GOOD).unwrap()["campus"]
        .clone()
        .try_into()
        .unwrap();
    let at = FieldPath::root().key("device").index(0).key("location");
    let loc = model::resolve_location("main/A/1/east/door-3", &c, &at, &mut issues).unwrap();
    assert_eq!(loc.to_string(), "main/A/1/east/door-3");
    assert!(model::resolve_location("main/A/1/eats", &c, &at, &mut issues).is_none());
    assert!(
        issues[0].message.contains("did you mean \"east\""),
        "{issues:?}"
    );
}

#[test]
fn duplicate_tree_ids_are_refused() {
    let text = GOOD.to_owned() + "\n[[campus]]\nid = \"main\"\n";
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, m)| m.contains("campus id \"main\" is used twice")),
        "{p:?}"
    );
}

#[test]
fn two_uplinks_with_one_name_are_refused() {
    let up = "\n[[uplink]]\nname = \"county\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\n";
    let text = format!("{GOOD}{up}{up}");
    let p = problems(&text);
    assert!(
        p.iter()
            .any(|(_, m)| m.contains("uplink name \"county\" is used twice")),
        "{p:?}"
    );
    assert_eq!(problems(&format!("{GOOD}{up}")), Vec::new());
}

#[test]
fn sub_device_locations_are_checked_against_the_tree() {
    let fire = |loc: &str| {
        format!(
            "{GOOD}\n[[device]]\nid = \"fire\"\ndriver = \"gb26875\"\nlisten = \"127.0.0.1:9000\"\ncentre_address = 1\n[[device.uitd]]\naddress = 889\ndevice = \"uitd_a\"\nlocation = {loc}\n"
        )
    };
    assert_eq!(problems(&fire("\"main/A/1/east\"")), Vec::new());
    let p = problems(&fire("\"main/B\""));
    assert!(
        p.iter()
            .any(|(_, m)| m.contains("device \"uitd_a\"") && m.contains("unknown building \"B\"")),
        "{p:?}"
    );
    let p = problems(&fire("{ building = \"A\" }"));
    assert!(
        p.iter().any(|(_, m)| m.contains("from the campus down")),
        "{p:?}"
    );
}

#[test]
fn a_dedup_window_of_zero_or_over_a_day_is_refused_with_its_line() {
    assert_eq!(
        parse(GOOD, Path::new("t.toml"))
            .map_err(|e| e.to_string())
            .unwrap()
            .gateway
            .journal
            .dedup_window
            .0
            .as_secs(),
        600
    );
    for bad in ["\"0s\"", "\"2d\""] {
        let text = GOOD.replace(
            "quota = \"512MiB\"",
            &format!("quota = \"512MiB\"\ndedup_window = {bad}"),
        );
        let p = problems(&text);
        assert!(
            p.iter()
                .any(|(line, m)| *line == 10 && m.contains("gateway.journal.dedup_window")),
            "{bad}: {p:?}"
        );
    }
}

#[test]
fn access_takes_a_roster_and_an_access_retention_within_bounds() {
    let text = format!("{GOOD}\n[access]\nroster = \"/etc/campusgw/roster.csv\"\n");
    let c = parse(&text, Path::new("t.toml"))
        .map_err(|e| e.to_string())
        .unwrap();
    assert_eq!(
        c.access.and_then(|a| a.roster),
        Some(std::path::PathBuf::from("/etc/campusgw/roster.csv"))
    );
    let p = problems(&format!("{GOOD}\n[access]\nrooster = \"x\"\n"));
    assert!(p.iter().any(|(_, m)| m.contains("rooster")), "{p:?}");
    for (v, ok) in [("\"3d\"", true), ("\"10m\"", false), ("\"30d\"", false)] {
        let text = GOOD.replace(
            "quota = \"512MiB\"",
            &format!("quota = \"512MiB\"\naccess_retention = {v}"),
        );
        let p = problems(&text);
        assert_eq!(p.is_empty(), ok, "{v}: {p:?}");
        if !ok {
            assert!(
                p.iter()
                    .any(|(line, m)| *line == 10 && m.contains("gateway.journal.access_retention")),
                "{v}: {p:?}"
            );
        }
    }
}
