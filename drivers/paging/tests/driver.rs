//! The sip_paging driver against simulated speakers on 127.0.0.1:0, with the SDK's in-memory
//! host. Every wait is on a condition with a generous deadline; nothing asserts on time.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use campusgw_paging::SipPagingConfig;
use campusgw_paging::audio::Program;
use campusgw_paging::messages::Library;
use campusgw_paging::rtp::Codec;
use campusgw_paging::sim::{Behaviour, Heard, SpeakerSim, distinct_frames};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Class, Command, CommandKind, CommandResult, CommandStatus, DeviceHealth,
    DeviceId, Driver, DriverConfig, FieldPath, Location, Target,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

async fn speakers(b: &[Behaviour]) -> Vec<SpeakerSim> {
    let mut v = Vec::new();
    for x in b {
        v.push(SpeakerSim::start(x.clone()).await.unwrap());
    }
    v
}

fn zone_toml(device: &str, sims: &[SpeakerSim], extra: &str) -> String {
    let list: Vec<String> = sims
        .iter()
        .map(|s| format!("{{ uri = \"{}\"{extra} }}", s.uri()))
        .collect();
    format!(
        "[[zone]]\ndevice = \"{device}\"\nlocation = {{ building = \"A\" }}\nspeakers = [{}]\n",
        list.join(", ")
    )
}

const BASE: &str = r#"
bind = "127.0.0.1:0"
answer_timeout = "1s"
retry = { attempts = 1, backoff = "100ms" }
[messages.notice]
priority = "manual"
on_preempted = "resume"
segments = ["silence:200ms", "sounder:1s"]
[messages.short]
priority = "manual"
segments = ["tone:lockdown"]
"#;

fn start(text: &str) -> (TestHost, SipPagingConfig) {
    let cfg: SipPagingConfig = toml::from_str(text).unwrap();
    assert!(
        cfg.validate(&FieldPath::root()).is_empty(),
        "{:?}",
        cfg.validate(&FieldPath::root())
    );
    let host = TestHost::new("pa", "sip_paging");
    let bcx = BuildContext {
        device: DeviceId::new("pa").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&bcx).unwrap();
    tokio::spawn(driver.run(host.context()));
    (host, cfg)
}

async fn send(
    host: &TestHost,
    kind: CommandKind,
    device: &str,
    args: serde_json::Value,
) -> CommandResult {
    let c = Command::new(
        kind,
        Target::Device(DeviceId::new(device).unwrap()),
        args,
        "test",
    );
    host.command(c, device, WAIT).await
}

async fn play(host: &TestHost, zone: &str, message: &str) -> CommandResult {
    send(
        host,
        CommandKind::BROADCAST_PLAY,
        zone,
        json!({"message": message, "repeat": true}),
    )
    .await
}

fn program(cfg: &SipPagingConfig, message: &str) -> Program {
    let lib = Library::load(
        &cfg.messages,
        &BTreeMap::new(),
        &BTreeSet::from([Some("A".to_owned())]),
    )
    .unwrap();
    lib.program(message, Some("A")).unwrap().clone()
}

fn hears(h: &Heard, frames: &BTreeSet<Vec<u8>>) -> bool {
    h.rtp.recent.iter().any(|p| frames.contains(p))
}

fn clean(h: &Heard) -> bool {
    h.rtp.seq_gaps == 0
        && h.rtp.timestamp_errors == 0
        && h.rtp.wrong_size == 0
        && h.rtp.bad_packets == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_of_fifty_speakers_plays_on_the_45_that_answer_and_reports_the_5_that_do_not() {
    let mut b = vec![Behaviour::Answer; 45];
    b.extend([
        Behaviour::Stall,
        Behaviour::Stall,
        Behaviour::Refuse(486),
        Behaviour::Garbage,
        Behaviour::Refuse(603),
    ]);
    let sims = speakers(&b).await;
    let (host, _) = start(&format!("{BASE}{}", zone_toml("zone_a", &sims, "")));
    let r = play(&host, "zone_a", "evacuation").await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    assert!(
        r.detail.contains("playing on 45 of 50 speakers"),
        "{}",
        r.detail
    );
    for s in &sims[..45] {
        let h = s.wait_until(WAIT, |h| h.rtp.packets >= 10).await.unwrap();
        assert!(clean(&h), "{:?}", h.rtp);
        assert_eq!(h.rtp.payload_types, BTreeSet::from([8]));
    }
    host.wait_until(WAIT, |evs| {
        evs.iter()
            .filter(|e| e.kind.as_str() == "broadcast.failed")
            .count()
            == 5
            && evs
                .iter()
                .filter(|e| e.kind.as_str() == "broadcast.started")
                .count()
                == 45
    })
    .await;
    let failed: BTreeSet<String> = host
        .events()
        .iter()
        .filter(|e| e.kind.as_str() == "broadcast.failed")
        .map(|e| e.payload["speaker"].as_str().unwrap().to_owned())
        .collect();
    let silent: BTreeSet<String> = sims[45..].iter().map(SpeakerSim::uri).collect();
    assert_eq!(failed, silent);
    assert!(
        host.events()
            .iter()
            .all(|e| e.kind.as_str() != "broadcast.unreachable")
    );
    // the zone's health names what is broken
    let h = host
        .wait_for_health(WAIT, |h| matches!(h, DeviceHealth::Degraded(_)))
        .await;
    assert_eq!(
        h,
        DeviceHealth::Degraded("5 of 50 speakers not reached".into())
    );
    let r = send(&host, CommandKind::BROADCAST_STOP, "zone_a", json!({})).await;
    assert_eq!(r.status, CommandStatus::Succeeded);
    for s in &sims[..45] {
        s.wait_until(WAIT, |h| h.byes == 1).await.unwrap();
    }
}

#[tokio::test]
async fn an_evacuation_zone_no_speaker_answers_raises_a_life_safety_unreachable_event() {
    let sims = speakers(&[Behaviour::Stall, Behaviour::Refuse(486)]).await;
    let (host, _) = start(&format!("{BASE}{}", zone_toml("zone_a", &sims, "")));
    let r = play(&host, "zone_a", "evacuation").await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    let e = host.wait_for_kind("broadcast.unreachable", WAIT).await;
    assert_eq!(e.class, Class::LifeSafety);
    assert_eq!(e.source.device.as_str(), "zone_a");
    assert_eq!(e.location.building.as_deref(), Some("A"));
    assert!(
        e.payload["failures"][sims[1].uri()]
            .as_str()
            .unwrap()
            .contains("486")
    );
    // the stalled speaker was cancelled only if it had answered provisionally; it had not
    assert_eq!(sims[0].heard().answered, 0);
}

#[tokio::test]
async fn a_fire_evacuation_preempts_the_bell_on_the_open_call_and_the_bell_does_not_resume() {
    let sims = speakers(&[Behaviour::Answer]).await;
    let (host, cfg) = start(&format!("{BASE}{}", zone_toml("zone_a", &sims, "")));
    let bell = program(&cfg, "bell");
    let evac = program(&cfg, "evacuation");
    let bell_only = distinct_frames(&bell, &evac, Codec::Pcma);
    let evac_only = distinct_frames(&evac, &bell, Codec::Pcma);
    assert_eq!(
        play(&host, "zone_a", "bell").await.status,
        CommandStatus::Succeeded
    );
    sims[0]
        .wait_until(WAIT, |h| hears(h, &bell_only))
        .await
        .unwrap();
    let r = play(&host, "zone_a", "evacuation").await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    // The switch happens on the open call: the speaker hears the evacuation without a new
    // INVITE and without a break in sequence numbers (the 500 ms bound is benchmarked).
    let h = sims[0]
        .wait_until(WAIT, |h| {
            h.rtp
                .recent
                .iter()
                .rev()
                .take(3)
                .all(|p| evac_only.contains(p) || !bell_only.contains(p))
                && hears(h, &evac_only)
        })
        .await
        .unwrap();
    assert_eq!(h.invites, 1);
    assert!(clean(&h), "{:?}", h.rtp);
    assert_eq!(h.rtp.ssrcs.len(), 1);
    let stopped = host.wait_for_kind("broadcast.stopped", WAIT).await;
    assert_eq!(
        (
            stopped.payload["reason"].as_str(),
            stopped.payload["resumes"].as_bool()
        ),
        (Some("preempted"), Some(false))
    );
    // a bell asked for during the evacuation is refused
    let r = play(&host, "zone_a", "bell").await;
    assert_eq!(r.status, CommandStatus::Rejected, "{}", r.detail);
    let r = send(
        &host,
        CommandKind::BROADCAST_STOP,
        "zone_a",
        json!({"message": "evacuation"}),
    )
    .await;
    assert_eq!(r.status, CommandStatus::Succeeded);
    // nothing left to resume: the call ends
    sims[0].wait_until(WAIT, |h| h.byes == 1).await.unwrap();
}

#[tokio::test]
async fn a_manual_announcement_preempted_by_lockdown_resumes_when_the_lockdown_stops() {
    let sims = speakers(&[Behaviour::Answer]).await;
    let (host, cfg) = start(&format!("{BASE}{}", zone_toml("zone_a", &sims, "")));
    let notice = program(&cfg, "notice");
    let lockdown = program(&cfg, "lockdown");
    let notice_only = distinct_frames(&notice, &lockdown, Codec::Pcma);
    let lockdown_only = distinct_frames(&lockdown, &notice, Codec::Pcma);
    assert_eq!(
        play(&host, "zone_a", "notice").await.status,
        CommandStatus::Succeeded
    );
    sims[0]
        .wait_until(WAIT, |h| hears(h, &notice_only))
        .await
        .unwrap();
    assert_eq!(
        play(&host, "zone_a", "lockdown").await.status,
        CommandStatus::Succeeded
    );
    sims[0]
        .wait_until(WAIT, |h| {
            h.rtp
                .recent
                .iter()
                .rev()
                .take(20)
                .all(|p| !notice_only.contains(p))
                && hears(h, &lockdown_only)
        })
        .await
        .unwrap();
    send(
        &host,
        CommandKind::BROADCAST_STOP,
        "zone_a",
        json!({"message": "lockdown"}),
    )
    .await;
    let h = sims[0]
        .wait_until(WAIT, |h| {
            h.rtp
                .recent
                .iter()
                .rev()
                .take(10)
                .any(|p| notice_only.contains(p))
        })
        .await
        .unwrap();
    assert_eq!(h.invites, 1);
    assert!(clean(&h), "{:?}", h.rtp);
    host.wait_until(WAIT, |evs| {
        evs.iter().any(|e| {
            e.kind.as_str() == "broadcast.started"
                && e.payload["message"] == "notice"
                && e.payload["resumed"] == true
        })
    })
    .await;
}

#[tokio::test]
async fn a_message_played_twice_sends_exactly_two_cycles_with_contiguous_timestamps() {
    let sims = speakers(&[Behaviour::Answer]).await;
    let (host, cfg) = start(&format!("{BASE}{}", zone_toml("zone_a", &sims, "")));
    let frames = program(&cfg, "short").frames() as u64;
    let r = send(
        &host,
        CommandKind::BROADCAST_PLAY,
        "zone_a",
        json!({"message": "short", "repeat": 2}),
    )
    .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    // after the second cycle the zone is idle and hangs up
    let h = sims[0].wait_until(WAIT, |h| h.byes == 1).await.unwrap();
    assert_eq!(h.rtp.packets, 2 * frames);
    assert!(clean(&h), "{:?}", h.rtp);
    host.wait_until(WAIT, |evs| {
        evs.iter()
            .any(|e| e.kind.as_str() == "broadcast.stopped" && e.payload["reason"] == "finished")
    })
    .await;
}

#[tokio::test]
async fn a_speaker_that_challenges_is_called_again_with_digest_credentials() {
    let sims = speakers(&[Behaviour::Challenge {
        user: "pa".into(),
        password: "s3cret".into(),
    }])
    .await;
    let (host, _) = start(&format!(
        "{BASE}{}",
        zone_toml("zone_a", &sims, ", user = \"pa\", password = \"s3cret\"")
    ));
    let r = play(&host, "zone_a", "evacuation").await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    let h = sims[0]
        .wait_until(WAIT, |h| h.rtp.packets >= 5)
        .await
        .unwrap();
    assert_eq!((h.auth_ok, h.auth_failed, h.invites), (1, 0, 2));
}

#[tokio::test]
async fn wrong_credentials_fail_the_speaker_with_an_authentication_reason() {
    let sims = speakers(&[Behaviour::Challenge {
        user: "pa".into(),
        password: "s3cret".into(),
    }])
    .await;
    let (host, _) = start(&format!(
        "{BASE}{}",
        zone_toml("zone_a", &sims, ", user = \"pa\", password = \"wrong\"")
    ));
    let r = play(&host, "zone_a", "notice").await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    let e = host.wait_for_kind("broadcast.failed", WAIT).await;
    assert!(
        e.payload["reason"]
            .as_str()
            .unwrap()
            .contains("authentication"),
        "{}",
        e.payload
    );
    assert_eq!(sims[0].heard().auth_failed, 1);
}

#[tokio::test]
async fn auto_answer_headers_follow_each_speakers_vendor_profile() {
    let sims = speakers(&[Behaviour::Answer, Behaviour::Answer, Behaviour::Answer]).await;
    let zone = format!(
        "[[zone]]\ndevice = \"z\"\nspeakers = [{{ uri = \"{}\" }}, {{ uri = \"{}\", profile = \"polycom\" }}, {{ uri = \"{}\", profile = \"intercom\" }}]\n",
        sims[0].uri(),
        sims[1].uri(),
        sims[2].uri()
    );
    let (host, _) = start(&format!("{BASE}{zone}"));
    assert_eq!(
        play(&host, "z", "notice").await.status,
        CommandStatus::Succeeded
    );
    let generic = sims[0].heard();
    assert!(
        generic
            .auto_answer
            .iter()
            .any(|h| h.starts_with("call-info:") && h.ends_with(";answer-after=0")),
        "{:?}",
        generic.auto_answer
    );
    assert!(
        generic
            .auto_answer
            .contains(&"alert-info: <http://127.0.0.1>;info=alert-autoanswer;delay=0".to_owned())
    );
    assert!(
        generic.offer.contains("m=audio ")
            && generic.offer.contains("a=sendonly")
            && generic.offer.contains("a=ptime:20")
    );
    assert_eq!(sims[1].heard().auto_answer, ["alert-info: Ring-Answer"]);
    assert!(sims[2].heard().request_uri.ends_with(";intercom=true"));
}

#[tokio::test]
async fn a_speaker_hanging_up_mid_message_is_reported_and_called_again() {
    let sims = speakers(&[
        Behaviour::HangUpAfter(Duration::from_millis(300)),
        Behaviour::Answer,
    ])
    .await;
    let text = format!(
        "{}{}",
        BASE.replace("attempts = 1", "attempts = 2"),
        zone_toml("zone_a", &sims, "")
    );
    let (host, _) = start(&text);
    assert_eq!(
        play(&host, "zone_a", "evacuation").await.status,
        CommandStatus::Succeeded
    );
    host.wait_until(WAIT, |evs| {
        evs.iter().any(|e| {
            e.kind.as_str() == "broadcast.stopped" && e.payload["reason"] == "speaker hung up"
        })
    })
    .await;
    sims[0]
        .wait_until(WAIT, |h| h.invites >= 2 && h.hung_up >= 2)
        .await
        .unwrap();
    // the other speaker of the zone was never disturbed
    let h = sims[1]
        .wait_until(WAIT, |h| h.rtp.packets >= 50)
        .await
        .unwrap();
    assert!(clean(&h), "{:?}", h.rtp);
    assert_eq!(h.invites, 1);
}

#[tokio::test]
async fn the_drivers_own_device_plays_on_listed_zones_and_leaves_scopes_to_the_zones() {
    let sims = speakers(&[Behaviour::Answer, Behaviour::Answer]).await;
    let text = format!(
        "{BASE}{}{}",
        zone_toml("z1", &sims[..1], ""),
        zone_toml("z2", &sims[1..], "")
    );
    let (host, _) = start(&text);
    let r = send(
        &host,
        CommandKind::BROADCAST_PLAY,
        "pa",
        json!({"message": "notice", "zones": ["z2"]}),
    )
    .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    sims[1]
        .wait_until(WAIT, |h| h.rtp.packets > 0)
        .await
        .unwrap();
    assert_eq!(sims[0].heard().invites, 0);
    let c = Command::new(
        CommandKind::BROADCAST_PLAY,
        Target::Scope("building:A".into()),
        json!({"message": "notice"}),
        "test",
    );
    assert_eq!(
        host.command(c, "pa", WAIT).await.status,
        CommandStatus::Unsupported
    );
    let r = send(
        &host,
        CommandKind::BROADCAST_PLAY,
        "z1",
        json!({"message": "evacuaton"}),
    )
    .await;
    assert_eq!(r.status, CommandStatus::Rejected);
    assert!(
        r.detail.contains("did you mean \"evacuation\""),
        "{}",
        r.detail
    );
    let c = Command::new(
        CommandKind::DOOR_UNLOCK,
        Target::Device(DeviceId::new("z1").unwrap()),
        json!({}),
        "test",
    );
    assert_eq!(
        host.command(c, "z1", WAIT).await.status,
        CommandStatus::Unsupported
    );
}

#[tokio::test]
async fn a_driver_dropped_by_its_supervisor_hangs_up_its_calls() {
    let sims = speakers(&[Behaviour::Answer]).await;
    let cfg: SipPagingConfig =
        toml::from_str(&format!("{BASE}{}", zone_toml("zone_a", &sims, ""))).unwrap();
    let host = TestHost::new("pa", "sip_paging");
    let bcx = BuildContext {
        device: DeviceId::new("pa").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let run = tokio::spawn(cfg.build(&bcx).unwrap().run(host.context()));
    assert_eq!(
        play(&host, "zone_a", "evacuation").await.status,
        CommandStatus::Succeeded
    );
    sims[0]
        .wait_until(WAIT, |h| h.rtp.packets > 0)
        .await
        .unwrap();
    // a restart drops the run future; its zones must not keep playing behind the new one
    run.abort();
    sims[0].wait_until(WAIT, |h| h.byes == 1).await.unwrap();
}

#[tokio::test]
async fn a_retransmitted_play_command_joins_the_program_it_started() {
    let sims = speakers(&[Behaviour::Answer]).await;
    let (host, _) = start(&format!("{BASE}{}", zone_toml("zone_a", &sims, "")));
    let c = Command::new(
        CommandKind::BROADCAST_PLAY,
        Target::Device(DeviceId::new("zone_a").unwrap()),
        json!({"message": "evacuation", "repeat": true}),
        "rule:fire_confirmed",
    );
    assert_eq!(
        host.command(c.clone(), "zone_a", WAIT).await.status,
        CommandStatus::Succeeded
    );
    sims[0]
        .wait_until(WAIT, |h| h.rtp.packets >= 5)
        .await
        .unwrap();
    let r = host.command(c, "zone_a", WAIT).await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    let before = sims[0].heard().rtp.packets;
    let h = sims[0]
        .wait_until(WAIT, |h| h.rtp.packets >= before + 10)
        .await
        .unwrap();
    assert_eq!(h.invites, 1);
    assert!(clean(&h), "{:?}", h.rtp);
}

#[tokio::test]
async fn a_refusing_speaker_is_retried_per_policy_and_then_given_up() {
    let sims = speakers(&[Behaviour::Refuse(486), Behaviour::Answer]).await;
    let text = format!(
        "{}{}",
        BASE.replace("attempts = 1", "attempts = 3"),
        zone_toml("zone_a", &sims, "")
    );
    let (host, _) = start(&text);
    let r = play(&host, "zone_a", "notice").await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    host.wait_until(WAIT, |evs| {
        evs.iter()
            .filter(|e| e.kind.as_str() == "broadcast.failed")
            .count()
            == 3
    })
    .await;
    let tries: Vec<(u64, bool)> = host
        .events()
        .iter()
        .filter(|e| e.kind.as_str() == "broadcast.failed")
        .map(|e| {
            (
                e.payload["attempt"].as_u64().unwrap(),
                e.payload["retrying"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(tries, [(1, true), (2, true), (3, false)]);
    assert_eq!(sims[0].heard().invites, 3);
}
