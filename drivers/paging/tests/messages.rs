//! The shipped messages: spoken by espeak-ng in Mandarin and English (installed by
//! scripts/test), composed per building, converted to G.711 at load and played to a speaker.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::time::Duration;

use campusgw_paging::audio::{ANNOUNCEMENT_MAX, ANNOUNCEMENT_MIN, SOUNDER_MIN};
use campusgw_paging::messages::Library;
use campusgw_paging::rtp::Codec;
use campusgw_paging::sim::{Behaviour, SpeakerSim};
use campusgw_paging::speech::{Voice, shipped};
use campusgw_paging::{SipPagingConfig, wav};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceId, Driver, DriverConfig, Location,
    Target,
};
use serde_json::json;

#[test]
fn the_shipped_messages_are_spoken_in_mandarin_and_english_and_name_the_building() {
    let dir = tempfile::tempdir().unwrap();
    let campusgw_paging::speech::Shipped {
        messages,
        clips,
        voice,
    } = shipped(dir.path(), &["A", "B"]).unwrap();
    // scripts/test installs espeak-ng; the tone stand-ins are for machines without it
    assert_eq!(
        voice,
        Voice::Espeak,
        "espeak-ng is not installed (Debian package espeak-ng)"
    );
    for f in [
        "evacuation_zh.wav",
        "evacuation_en.wav",
        "lockdown_zh.wav",
        "lockdown_en.wav",
        "building_A.wav",
    ] {
        let pcm = wav::read_8k_mono(&std::fs::read(dir.path().join(f)).unwrap()).unwrap();
        // real speech: more than a second, and not silence
        assert!(pcm.len() > 8_000, "{f}: {} samples", pcm.len());
        assert!(
            pcm.iter().any(|s| s.unsigned_abs() > 1_000),
            "{f} is silent"
        );
    }
    let lib = Library::load(
        &messages,
        &clips,
        &BTreeSet::from([Some("A".to_owned()), Some("B".to_owned())]),
    )
    .unwrap();
    let a = lib.program("evacuation", Some("A")).unwrap();
    let b = lib.program("evacuation", Some("B")).unwrap();
    // the cycle is an announcement within 10-30 s plus the sounder within 8-20 s
    assert!(
        a.duration() >= ANNOUNCEMENT_MIN + SOUNDER_MIN,
        "{:?}",
        a.duration()
    );
    assert!(
        a.duration() <= ANNOUNCEMENT_MAX + Duration::from_secs(20),
        "{:?}",
        a.duration()
    );
    // the two buildings' messages differ where the building is named
    assert_ne!(a.frame(Codec::Pcma, 10), b.frame(Codec::Pcma, 10));
    assert!(lib.program("lockdown", Some("B")).unwrap().duration() > Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_evacuation_plays_to_a_speaker_in_its_building() {
    let dir = tempfile::tempdir().unwrap();
    let campusgw_paging::speech::Shipped {
        messages, clips, ..
    } = shipped(dir.path(), &["A"]).unwrap();
    let spk = SpeakerSim::start(Behaviour::Answer).await.unwrap();
    let mut cfg: SipPagingConfig = toml::from_str(&format!(
        "bind = \"127.0.0.1:0\"\n[[zone]]\ndevice = \"z\"\nlocation = {{ building = \"A\" }}\nspeakers = [{{ uri = \"{}\" }}]\n",
        spk.uri()
    ))
    .unwrap();
    cfg.messages = messages.clone();
    cfg.building_clips = clips.clone();
    // Loaded before playing: converting in a debug build takes long enough to starve the
    // player on this runtime, which then (rightly) skips frames to stay on its clock.
    let lib = Library::load(&messages, &clips, &BTreeSet::from([Some("A".to_owned())])).unwrap();
    let program = lib.program("evacuation", Some("A")).unwrap();
    let host = TestHost::new("pa", "sip_paging");
    let bcx = BuildContext {
        device: DeviceId::new("pa").unwrap(),
        location: Location::default(),
        data_dir: dir.path().into(),
    };
    tokio::spawn(cfg.build(&bcx).unwrap().run(host.context()));
    let c = Command::new(
        CommandKind::BROADCAST_PLAY,
        Target::Scope("building:A".into()),
        json!({"message": "evacuation", "repeat": true}),
        "rule:fire_confirmed",
    );
    let r = host.command(c, "z", Duration::from_secs(30)).await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    let h = spk
        .wait_until(Duration::from_secs(30), |h| h.rtp.packets >= 50)
        .await
        .unwrap();
    // the speaker heard building A's message from its first frame, in order
    let (n, k) = (h.rtp.packets as usize, h.rtp.recent.len());
    let expected: Vec<&[u8]> = (n - k..n).map(|i| program.frame(Codec::Pcma, i)).collect();
    let heard: Vec<&[u8]> = h.rtp.recent.iter().map(Vec::as_slice).collect();
    assert!(
        heard == expected,
        "the speaker did not hear frames {}..{n} of the message",
        n - k
    );
}
