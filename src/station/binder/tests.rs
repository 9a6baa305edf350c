//! The binder's rules: sessions opened by scans, readings bound to them,
//! and every way a session ends.

use std::time::Duration;

use super::*;
use crate::record::Transport;

const IDLE: u64 = 300_000;

fn station() -> Station {
    Station {
        id: "grip-corner".into(),
        devices: vec!["grip-1".into(), "hw-1".into(), "hub".into()],
        readers: vec!["qr-1".into()],
        operators: vec!["op-1".into()],
        idle_timeout: Duration::from_millis(IDLE),
    }
}

fn from(device: &str, subject: Option<&str>, event: Option<StationEvent>) -> Incoming {
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "site".into(),
        device_id: device.into(),
        profile_id: "p".into(),
        transport: Transport::Serial,
    };
    let measurement = Measurement {
        subject_ref: subject.map(str::to_string),
        ..Measurement::default()
    };
    Incoming {
        record: Record::new(&origin, measurement),
        durable: None,
        event,
    }
}

fn scan(subject: &str) -> Incoming {
    from("qr-1", Some(subject), None)
}

fn reading(device: &str) -> Incoming {
    from(device, None, None)
}

fn records(step: Step) -> Vec<Record> {
    step.forward.into_iter().map(|i| i.record).collect()
}

fn kind(r: &Record) -> Option<(SessionEventKind, Option<CloseReason>)> {
    r.session.as_ref().map(|s| (s.event, s.reason))
}

#[test]
fn a_scan_opens_a_session_that_binds_the_stations_readings_until_the_next_scan() {
    let (mut b, first) = Binder::new(&[station()], Saved::default(), 0);
    assert!(first.forward.is_empty());
    let open = records(b.push(scan("psn1:aa"), 1_000));
    assert_eq!(open.len(), 1);
    assert_eq!(kind(&open[0]), Some((SessionEventKind::Open, None)));
    let session = open[0].session_id.clone().unwrap();
    for (n, device) in ["grip-1", "hw-1", "hub.band-01"].iter().enumerate() {
        let r = records(b.push(reading(device), 2_000 + n as u64)).remove(0);
        assert_eq!(r.subject_ref.as_deref(), Some("psn1:aa"), "{device}");
        assert_eq!(r.session_id.as_deref(), Some(session.as_str()));
        assert_eq!(r.binding, Some(Binding::Session));
        assert_eq!(r.station_id.as_deref(), Some("grip-corner"));
    }
    let next = records(b.push(scan("psn1:bb"), 9_000));
    assert_eq!(next.len(), 2, "the first session closes, the next opens");
    assert_eq!(
        kind(&next[0]),
        Some((SessionEventKind::Close, Some(CloseReason::NextScan)))
    );
    assert_eq!(next[0].subject_ref.as_deref(), Some("psn1:aa"));
    assert_eq!(next[0].session.as_ref().unwrap().readings, Some(3));
    assert_eq!(
        next[0].device_id, "qr-1",
        "a close record comes from the reader"
    );
    assert_eq!(kind(&next[1]), Some((SessionEventKind::Open, None)));
    let r = records(b.push(reading("grip-1"), 9_500)).remove(0);
    assert_eq!(r.subject_ref.as_deref(), Some("psn1:bb"));
    assert_ne!(r.session_id, Some(session));
}

#[test]
fn devices_outside_stations_pass_unchanged() {
    let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
    b.push(scan("psn1:aa"), 0);
    let r = records(b.push(reading("treadmill-1"), 1)).remove(0);
    assert_eq!((r.subject_ref, r.station_id, r.binding), (None, None, None));
}

#[test]
fn idle_timeout_end_event_and_rejected_scan_each_close_and_later_readings_are_unbound() {
    let ends = [
        (None, Some(CloseReason::IdleTimeout)),
        (Some(StationEvent::EndSession), Some(CloseReason::EndEvent)),
        (
            Some(StationEvent::ScanRejected {
                problem: "check_digit",
                fingerprint: "1a2b3c4d".into(),
            }),
            Some(CloseReason::RejectedScan),
        ),
    ];
    for (event, reason) in ends {
        let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
        b.push(scan("psn1:aa"), 0);
        b.push(reading("grip-1"), 1_000);
        assert!(records(b.tick(1_000 + IDLE - 1)).is_empty(), "not idle yet");
        let closed = match event {
            None => records(b.tick(1_000 + IDLE)),
            Some(e) => records(b.push(from("qr-1", None, Some(e)), 2_000)),
        };
        assert_eq!(closed.len(), 1, "{reason:?}");
        assert_eq!(kind(&closed[0]), Some((SessionEventKind::Close, reason)));
        if reason == Some(CloseReason::RejectedScan) {
            let detail = closed[0].session.as_ref().unwrap().detail.clone();
            assert_eq!(detail.as_deref(), Some("check_digit, fingerprint 1a2b3c4d"));
        }
        let after = records(b.push(reading("hw-1"), 1_000 + 2 * IDLE)).remove(0);
        assert_eq!(after.binding, Some(Binding::Unbound), "{reason:?}");
        assert_eq!(after.subject_ref, None);
        assert_eq!(after.station_id.as_deref(), Some("grip-corner"));
        assert_eq!(b.open_sessions(), 0);
    }
}

#[test]
fn activity_keeps_a_session_open() {
    let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
    b.push(scan("psn1:aa"), 0);
    for t in 1..5 {
        b.push(reading("grip-1"), t * (IDLE - 1000));
        assert!(records(b.tick(t * (IDLE - 1000) + 1)).is_empty());
    }
    assert_eq!(b.open_sessions(), 1);
}

#[test]
fn a_devices_own_subject_wins_and_the_operator_is_carried() {
    let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
    let step = b.push(from("op-1", Some("psn1:op"), None), 0);
    assert!(
        step.forward.is_empty() && step.changed,
        "an operator card makes no record"
    );
    let open = records(b.push(scan("psn1:aa"), 0)).remove(0);
    assert_eq!(open.operator_ref.as_deref(), Some("psn1:op"));
    let own = records(b.push(from("grip-1", Some("psn1:zz"), None), 1)).remove(0);
    assert_eq!(own.subject_ref.as_deref(), Some("psn1:zz"));
    assert_eq!(own.binding, Some(Binding::Device));
    assert_eq!(
        own.session_id, None,
        "another person's reading is not in the session"
    );
    let same = records(b.push(from("grip-1", Some("psn1:aa"), None), 2)).remove(0);
    assert_eq!(same.binding, Some(Binding::Device));
    assert_eq!(same.session_id, open.session_id);
    // No session: the device's subject is still kept.
    let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
    let lone = records(b.push(from("hw-1", Some("psn1:zz"), None), 0)).remove(0);
    assert_eq!(lone.binding, Some(Binding::Device));
}

#[test]
fn the_same_card_scanned_again_keeps_its_session() {
    let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
    b.push(scan("psn1:aa"), 0);
    let again = b.push(scan("psn1:aa"), 10);
    assert!(again.forward.is_empty());
    assert_eq!(again.settled.len(), 0, "no durable signal was given");
    assert_eq!(b.open_sessions(), 1);
}

#[test]
fn saved_sessions_resume_within_the_idle_timeout_and_close_after_it() {
    let (mut b, _) = Binder::new(&[station()], Saved::default(), 0);
    let open = records(b.push(scan("psn1:aa"), 1_000)).remove(0);
    let saved = b.saved();
    let text = serde_json::to_string(&saved).unwrap();
    let saved: Saved = serde_json::from_str(&text).unwrap();

    let (mut resumed, step) = Binder::new(&[station()], saved.clone(), 1_000 + IDLE - 1);
    assert!(step.forward.is_empty());
    let r = records(resumed.push(reading("grip-1"), 1_000 + IDLE)).remove(0);
    assert_eq!(r.session_id, open.session_id);
    assert_eq!(r.subject_ref.as_deref(), Some("psn1:aa"));

    let (expired, step) = Binder::new(&[station()], saved.clone(), 1_000 + IDLE);
    let closed = records(step);
    assert_eq!(
        kind(&closed[0]),
        Some((SessionEventKind::Close, Some(CloseReason::IdleTimeout)))
    );
    assert_eq!(closed[0].session_id, open.session_id);
    assert_eq!(expired.open_sessions(), 0);

    // A clock stepped back by more than the timeout is not trusted either.
    let (mut later, _) = Binder::new(&[station()], Saved::default(), 0);
    later.push(scan("psn1:aa"), 3 * IDLE);
    let (_, step) = Binder::new(&[station()], later.saved(), IDLE);
    assert_eq!(step.forward.len(), 1);
}
