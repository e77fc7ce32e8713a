//! The transmitting UITD (`campusgw_gb26875::transmit`) against the reference vectors in
//! `tests/data/frames.tsv` (byte-identical uploads and answers; sources in
//! `tests/data/README.md`) and against the simulated centre (`sim::centre`) over loopback
//! TCP: retransmission of the same bytes, 3 retries then reconnect, denies, clock sync,
//! 查岗, status reads, heartbeats, a silent centre, a backup centre, garbage.
#![allow(missing_docs, clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_gb26875::codec::{
    Address, Adu, CommandByte, ComponentAddress, ComponentStatus, Description, Frame, SystemRef,
    TimeLabel, UitdOperation, UitdStatus, Version,
};
use campusgw_gb26875::sim::centre::{CentreConfig, CentreMode, CentreSim, Mangle};
use campusgw_gb26875::transmit::{
    CentreLink, Identity, Inbound, TransmitError, TransmitSettings, UitdState,
};

const LIMIT: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/frames.tsv");
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("no fixture {name}"));
    campusgw_gb26875::parse_hex(line.split('\t').nth(2).unwrap()).unwrap()
}

/// The vectors' UITD 889 and centre 88888, version 1.1.
fn identity() -> Identity {
    Identity {
        uitd: Address::new(889).unwrap(),
        centre: Address::new(88888).unwrap(),
        version: Version::V1_1,
    }
}

/// 2012-09-26 09:58:ss CST, the vectors' clock.
fn at(second: u8) -> TimeLabel {
    TimeLabel::from_bytes([second, 0x3A, 0x09, 0x1A, 0x09, 0x0C])
}

fn upload_bytes(adu: &Adu) -> Vec<u8> {
    let mut s = UitdState::new(identity());
    s.connection_opened();
    s.upload(Some(adu), at(32)).unwrap().encode().unwrap()
}

#[test]
fn uploads_built_by_the_transmitter_equal_the_fixture_frames() {
    let smoke = Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: ComponentAddress::from_parts(10, 2),
        status: 0x0002,
        description: Description::new(&" ".repeat(30)),
        time: at(2),
    }]);
    assert_eq!(upload_bytes(&smoke), fixture("fire_alarm_smoke_detector"));
    let power = Adu::UitdStatus(vec![UitdStatus {
        status: 0x08,
        time: at(2),
    }]);
    assert_eq!(upload_bytes(&power), fixture("uitd_main_power_fault"));
    let answered = Adu::UitdOperation(vec![UitdOperation {
        flags: 0x20,
        operator: 1,
        time: at(2),
    }]);
    assert_eq!(upload_bytes(&answered), fixture("uitd_duty_check_answered"));
    let version = Adu::UitdVersion(vec![(1, 1)]);
    assert_eq!(upload_bytes(&version), fixture("uitd_software_version"));
}

#[test]
fn serials_start_at_one_on_each_connection_and_increment_per_upload() {
    let mut s = UitdState::new(identity());
    s.connection_opened();
    let serials: Vec<u16> = (0..3)
        .map(|_| s.upload(None, at(0)).unwrap().serial)
        .collect();
    assert_eq!(serials, [1, 2, 3]);
    s.connection_opened();
    assert_eq!(s.upload(None, at(0)).unwrap().serial, 1);
}

#[test]
fn a_uitd_status_read_is_answered_like_the_fixture_response() {
    let mut s = UitdState::new(identity());
    s.upload(
        Some(&Adu::UitdStatus(vec![UitdStatus {
            status: 0x08,
            time: at(2),
        }])),
        at(2),
    )
    .unwrap();
    let read = Frame::decode(&fixture("centre_read_uitd_status")).unwrap();
    let handled = s.handle(&read, at(32));
    assert_eq!(handled.inbound, Inbound::Answered(81));
    let reply = handled.reply.unwrap().encode().unwrap();
    assert_eq!(reply, fixture("uitd_status_response"));
}

#[test]
fn clock_sync_and_duty_check_fixtures_are_confirmed_and_surfaced() {
    let mut s = UitdState::new(identity());
    let sync = Frame::decode(&fixture("centre_sync_clock")).unwrap();
    let h = s.handle(&sync, at(33));
    assert_eq!(h.inbound, Inbound::ClockSync { time: at(2) });
    let confirm = h.reply.unwrap();
    assert_eq!(
        (confirm.command, confirm.serial, confirm.data.len()),
        (CommandByte::Confirm, 1, 0)
    );
    assert_eq!(
        (confirm.source.value(), confirm.destination.value()),
        (889, 88888)
    );
    let check = Frame::decode(&fixture("centre_duty_check")).unwrap();
    let h = s.handle(&check, at(33));
    assert_eq!(
        h.inbound,
        Inbound::DutyCheck {
            serial: 1,
            minutes: 10
        }
    );
    assert_eq!(h.reply.unwrap().command, CommandByte::Confirm);
}

#[test]
fn frames_for_another_uitd_an_initialise_and_an_unknown_read_are_denied() {
    let mut s = UitdState::new(identity());
    let mut other = Frame::decode(&fixture("centre_duty_check")).unwrap();
    other.destination = Address::new(890).unwrap();
    let h = s.handle(&other, at(0));
    assert_eq!(h.inbound, Inbound::Refused("not_our_address"));
    assert_eq!(h.reply.unwrap().command, CommandByte::Deny);
    let mut init = Frame::decode(&fixture("centre_duty_check")).unwrap();
    init.data = Adu::InitialiseUitd(vec![0]).encode().unwrap();
    assert_eq!(
        s.handle(&init, at(0)).reply.unwrap().command,
        CommandByte::Deny
    );
    let mut read = Frame::decode(&fixture("centre_read_uitd_status")).unwrap();
    read.data = Adu::ReadUitdConfig(vec![0]).encode().unwrap();
    assert_eq!(
        s.handle(&read, at(0)).inbound,
        Inbound::Refused("unsupported_request")
    );
}

// ---- over TCP, against the simulated centre ----

async fn centre() -> CentreSim {
    CentreSim::bind(
        "127.0.0.1:0".parse().unwrap(),
        CentreConfig::new(88888, 889),
    )
    .await
    .unwrap()
}

fn settings(centres: Vec<String>) -> Arc<TransmitSettings> {
    let mut s = TransmitSettings::new(centres, identity());
    s.confirm_timeout = Duration::from_millis(200);
    s.connect_timeout = Duration::from_secs(2);
    s.heartbeat = Duration::from_secs(3600);
    Arc::new(s)
}

async fn link(c: &CentreSim, s: Arc<TransmitSettings>) -> (CentreLink, Arc<Mutex<UitdState>>) {
    let state = Arc::new(Mutex::new(UitdState::new(identity())));
    let before = c.connections();
    let l = CentreLink::connect(s, state.clone()).await.unwrap();
    assert!(c.wait_connections(before + 1, LIMIT).await);
    (l, state)
}

fn fire(second: u8) -> Adu {
    Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: ComponentAddress::from_parts(3, u16::from(second)),
        status: 0x0002,
        description: Description::new("3楼东 烟感"),
        time: at(second),
    }])
}

#[tokio::test]
async fn a_confirmed_upload_reaches_the_centre_once_with_serial_one() {
    let c = centre().await;
    let s = settings(vec![c.local_addr().to_string()]);
    let (mut l, _) = link(&c, s).await;
    let r = l.upload(&fire(1)).await.unwrap();
    assert_eq!((r.centre, r.serial, r.attempts), (0, 1, 1));
    let up = c.uploads();
    assert_eq!(up.len(), 1);
    assert_eq!(Frame::decode(&up[0].bytes).unwrap(), up[0].frame);
    assert_eq!(up[0].frame.adu().unwrap(), Some(fire(1)));
}

#[tokio::test]
async fn a_silent_centre_gets_the_same_bytes_four_times_then_the_link_is_closed() {
    let c = centre().await;
    c.set_mode(CentreMode::Silent);
    let s = settings(vec![c.local_addr().to_string()]);
    let (mut l, state) = link(&c, s.clone()).await;
    let e = l.upload(&fire(2)).await.unwrap_err();
    assert!(
        matches!(
            e,
            TransmitError::NoConfirm {
                serial: 1,
                attempts: 4,
                ..
            }
        ),
        "{e:?}"
    );
    let up = c.uploads();
    assert_eq!(up.len(), 4, "first attempt and 3 retransmissions");
    assert!(
        up.iter().all(|r| r.bytes == up[0].bytes),
        "same serial and bytes"
    );
    assert!(matches!(
        tokio::time::timeout(LIMIT, l.next_inbound()).await.unwrap(),
        Err(TransmitError::Closed(_))
    ));
    // The caller reconnects: a new connection, numbered from 1 again, confirmed.
    c.set_mode(CentreMode::Confirm);
    let mut l = CentreLink::connect(s, state).await.unwrap();
    let r = l.upload(&fire(2)).await.unwrap();
    assert_eq!(r.serial, 1);
    assert!(c.wait_until(LIMIT, |_| c.connections() == 2).await);
    let last = c.uploads().pop().unwrap();
    assert_eq!(last.connection, 1);
    assert_eq!(
        last.frame.data, up[0].frame.data,
        "same content on the new link"
    );
}

#[tokio::test]
async fn denied_on_every_attempt_is_a_verdict_and_the_link_stays_up() {
    let c = centre().await;
    c.set_mode(CentreMode::Deny);
    let (mut l, _) = link(&c, settings(vec![c.local_addr().to_string()])).await;
    let e = l.upload(&fire(3)).await.unwrap_err();
    assert!(
        matches!(
            e,
            TransmitError::Denied {
                serial: 1,
                attempts: 4
            }
        ),
        "{e:?}"
    );
    c.set_mode(CentreMode::Confirm);
    let r = l.upload(&fire(4)).await.unwrap();
    assert_eq!((r.serial, r.attempts), (2, 1));
    assert_eq!(c.connections(), 1);
}

#[tokio::test]
async fn a_centre_that_drops_the_connection_ends_the_upload_as_closed() {
    let c = centre().await;
    c.set_mode(CentreMode::Drop);
    let (mut l, _) = link(&c, settings(vec![c.local_addr().to_string()])).await;
    let e = l.upload(&fire(5)).await.unwrap_err();
    assert!(matches!(e, TransmitError::Closed(_)), "{e:?}");
}

#[tokio::test]
async fn duty_check_clock_sync_and_reads_from_the_centre_are_answered_and_surfaced() {
    let c = centre().await;
    let (mut l, _) = link(&c, settings(vec![c.local_addr().to_string()])).await;
    l.upload(&Adu::UitdStatus(vec![UitdStatus {
        status: 0x01,
        time: at(0),
    }]))
    .await
    .unwrap();
    let serial = c.duty_check(10).await.unwrap();
    let got = tokio::time::timeout(LIMIT, l.next_inbound()).await.unwrap();
    assert_eq!(
        got.unwrap(),
        Inbound::DutyCheck {
            serial,
            minutes: 10
        }
    );
    let confirmed = |cmd: CommandByte, serial: u16| {
        move |r: &[campusgw_gb26875::sim::centre::Received]| {
            r.iter()
                .any(|f| f.frame.command == cmd && f.frame.serial == serial)
        }
    };
    assert!(
        c.wait_until(LIMIT, confirmed(CommandByte::Confirm, serial))
            .await
    );
    let serial = c.sync_clock(at(7)).await.unwrap();
    let got = tokio::time::timeout(LIMIT, l.next_inbound()).await.unwrap();
    assert_eq!(got.unwrap(), Inbound::ClockSync { time: at(7) });
    assert!(
        c.wait_until(LIMIT, confirmed(CommandByte::Confirm, serial))
            .await
    );
    let serial = c.request(&Adu::ReadUitdStatus(vec![0])).await.unwrap();
    let got = tokio::time::timeout(LIMIT, l.next_inbound()).await.unwrap();
    assert_eq!(got.unwrap(), Inbound::Answered(81));
    assert!(
        c.wait_until(LIMIT, confirmed(CommandByte::Response, serial))
            .await
    );
    let response = c
        .received()
        .into_iter()
        .find(|r| r.frame.command == CommandByte::Response)
        .unwrap();
    assert_eq!(
        response.frame.adu().unwrap(),
        Some(Adu::UitdStatus(vec![UitdStatus {
            status: 0x01,
            time: at(0)
        }]))
    );
}

#[tokio::test]
async fn a_corrupt_frame_from_the_centre_is_denied_and_the_link_survives() {
    let c = centre().await;
    let (mut l, _) = link(&c, settings(vec![c.local_addr().to_string()])).await;
    let mut bad = fixture("centre_duty_check");
    let n = bad.len();
    bad[n - 3] ^= 0xFF; // checksum
    c.send_raw(&bad).await.unwrap();
    assert!(
        c.wait_until(LIMIT, |r| r
            .iter()
            .any(|f| f.frame.command == CommandByte::Deny))
            .await
    );
    assert!(l.upload(&fire(6)).await.is_ok());
    let got = tokio::time::timeout(Duration::from_millis(100), l.next_inbound()).await;
    assert!(
        got.is_err(),
        "nothing surfaced for a corrupt frame: {got:?}"
    );
}

#[tokio::test]
async fn heartbeats_are_confirmed_and_a_centre_gone_silent_closes_the_link() {
    let c = centre().await;
    let mut s = TransmitSettings::new(vec![c.local_addr().to_string()], identity());
    s.heartbeat = Duration::from_millis(100);
    let state = Arc::new(Mutex::new(UitdState::new(identity())));
    let mut l = CentreLink::connect(Arc::new(s), state).await.unwrap();
    let beats = |r: &[campusgw_gb26875::sim::centre::Received]| {
        r.iter()
            .filter(|f| f.frame.command == CommandByte::SendData && f.frame.data.is_empty())
            .count()
    };
    assert!(c.wait_until(LIMIT, |r| beats(r) >= 3).await);
    c.set_mode(CentreMode::Silent);
    let got = tokio::time::timeout(LIMIT, l.next_inbound()).await.unwrap();
    assert!(
        matches!(got, Err(TransmitError::Closed(ref why)) if why.contains("heartbeat")),
        "{got:?}"
    );
}

#[tokio::test]
async fn the_backup_centre_is_used_when_the_primary_refuses_connections() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let c = centre().await;
    let s = settings(vec![dead_addr, c.local_addr().to_string()]);
    let (mut l, _) = link(&c, s).await;
    assert_eq!(l.centre, 1);
    assert_eq!(l.upload(&fire(8)).await.unwrap().centre, 1);
}

#[tokio::test]
async fn confirms_in_half_frames_behind_garbage_still_confirm_and_a_corrupt_one_is_not_taken() {
    let c = centre().await;
    let (mut l, _) = link(&c, settings(vec![c.local_addr().to_string()])).await;
    c.set_mangle(Mangle {
        split: Some(7),
        garbage_before: true,
        corrupt_checksum: false,
    });
    let r = l.upload(&fire(9)).await.unwrap();
    assert_eq!(r.attempts, 1);
    c.set_mangle(Mangle {
        corrupt_checksum: true,
        ..Mangle::default()
    });
    let e = l.upload(&fire(10)).await.unwrap_err();
    assert!(
        matches!(e, TransmitError::NoConfirm { attempts: 4, .. }),
        "{e:?}"
    );
    assert!(
        c.received()
            .iter()
            .any(|f| f.frame.command == CommandByte::Deny),
        "the corrupt confirm is answered with a deny"
    );
}
