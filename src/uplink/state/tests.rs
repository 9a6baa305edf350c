//! The session rules without a broker: packet-id pairing, reconnects with
//! and without a session, the two lanes and the pace, and a packing encoder
//! whose publishes each release several records.

use super::*;
use crate::clock::Stamp;
use crate::outbox::Stored;
use crate::record::{Measurement, Origin, Record, Transport};
use crate::uplink::payload::{Encoder, Publish, SendClock, Topics};

fn session(tail: u64, head: u64) -> Session {
    Session::new(10, 10, tail, head)
}

#[test]
fn packet_ids_pair_with_records_in_publish_order() {
    let mut s = session(0, 0);
    s.queued_status();
    s.queued(vec![7], Lane::Live);
    s.queued(vec![8], Lane::Live);
    s.sent(1);
    s.sent(2);
    s.sent(3);
    assert_eq!(s.acked(2), vec![7]);
    assert_eq!(s.acked(1), Vec::<u64>::new(), "status message");
    assert_eq!(s.acked(2), Vec::<u64>::new(), "acknowledged once");
    assert_eq!(s.acked(3), vec![8]);
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn a_retransmission_with_a_pending_id_pairs_with_nothing_new() {
    let mut s = session(0, 0);
    s.queued(vec![1], Lane::Live);
    s.queued(vec![2], Lane::Live);
    s.sent(5);
    s.sent(5); // rumqttc re-sends pkid 5 after a session resume
    assert_eq!(s.in_flight(), 2);
    s.sent(6);
    assert_eq!((s.acked(5), s.acked(6)), (vec![1], vec![2]));
}

#[test]
fn a_reconnect_without_a_session_republishes_everything_unacknowledged() {
    let mut s = session(40, 50);
    s.live_next = 50;
    s.queued(vec![49], Lane::Live);
    s.queued(vec![47, 48], Lane::Live);
    s.sent(3);
    let reconnect = s.connected(false, 40, 55);
    assert_eq!(
        reconnect,
        Reconnect {
            republished: 3,
            forget_unsent: true
        }
    );
    assert_eq!(
        (s.backlog_next, s.backlog_end, s.live_next, s.in_flight()),
        (40, 55, 55, 0),
        "the whole unacknowledged range is backlog; live starts at the head"
    );
    assert!(s.backlog_left());
    assert_eq!(
        s.acked(3),
        Vec::<u64>::new(),
        "old packet ids release nothing"
    );
}

#[test]
fn a_reconnect_with_a_session_turns_the_pile_up_into_backlog() {
    let mut s = session(0, 10); // 10 records from before: backlog 0..10
    s.backlog_next = 10; // all sent
    s.queued(vec![10, 11], Lane::Live); // two live ones sent
    s.sent(1);
    let reconnect = s.connected(true, 0, 50); // 38 piled up while down
    assert_eq!(
        reconnect,
        Reconnect {
            republished: 0,
            forget_unsent: false
        },
        "rumqttc resends what the session holds"
    );
    assert_eq!((s.backlog_next, s.backlog_end, s.live_next), (12, 50, 50));
    assert_eq!(s.acked(1), vec![10, 11], "in-flight pairing survives");
    s.backlog_next = 20;
    s.connected(true, 0, 60); // a backlog in progress is extended
    assert_eq!((s.backlog_next, s.backlog_end, s.live_next), (20, 60, 60));
}

#[test]
fn the_backlog_goes_at_its_pace_beside_the_live_lane() {
    let t0 = Instant::now();
    let mut s = session(0, 100);
    s.pace = Pace::new(10, t0);
    assert_eq!(
        s.backlog_reads(5, t0),
        None,
        "starts empty: no burst at connect"
    );
    assert_eq!(
        s.backlog_reads(100, t0 + Duration::from_millis(500)),
        Some((0, 100, 5))
    );
    s.queued(vec![0, 1, 2, 3, 4], Lane::Backlog);
    assert_eq!(s.backlog_next, 5);
    assert_eq!(s.live_from(), 100, "live starts at the head");
    s.queued(vec![100], Lane::Live);
    assert_eq!(
        (s.live_from(), s.backlog_next),
        (101, 5),
        "the lanes move apart"
    );
    assert_eq!(s.room(), 8);
    s.backlog_done();
    assert!(!s.backlog_left());
    assert_eq!(s.pace_at(), None);
}

#[test]
fn the_backlog_pace_allows_its_rate() {
    let t0 = Instant::now();
    let mut p = Pace::new(10, t0);
    assert_eq!(p.take(100, t0), 0, "starts empty: no burst at connect");
    assert_eq!(p.take(100, t0 + Duration::from_millis(500)), 5);
    assert_eq!(
        p.take(100, t0 + Duration::from_secs(10)),
        10,
        "burst capped at one second's worth"
    );
    assert!(p.next_at() <= t0 + Duration::from_secs(10) + Duration::from_millis(100));
}

/// Packs consecutive records of one device into one publish, the shape a
/// batch format takes.
struct PerDeviceRuns;

impl Encoder for PerDeviceRuns {
    fn encode(&self, records: &[Stored], topics: &Topics, _: &SendClock) -> Vec<Publish> {
        let mut out: Vec<Publish> = Vec::new();
        for stored in records {
            let topic = topics.records(&stored.record.device_id);
            match out.last_mut() {
                Some(last) if last.topic == topic => {
                    last.payload.push(b'\n');
                    last.seqs.push(stored.seq);
                }
                _ => out.push(Publish {
                    topic,
                    payload: Vec::new(),
                    seqs: vec![stored.seq],
                }),
            }
            let json = serde_json::to_vec(&stored.record).unwrap();
            out.last_mut().unwrap().payload.extend(json);
        }
        out
    }
}

fn stored(seq: u64, device: &str) -> Stored {
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "s".into(),
        device_id: device.into(),
        profile_id: "p".into(),
        transport: Transport::Serial,
    };
    let mut record = Record::new(&origin, Measurement::default());
    record.seq = seq;
    Stored {
        seq,
        stamp: Stamp::now(),
        record,
    }
}

#[test]
fn a_publish_carrying_several_records_releases_them_all_on_its_puback() {
    let topics = Topics {
        prefix: "fitedge".into(),
        site_id: "s".into(),
        gateway_id: "gw".into(),
    };
    let records: Vec<_> = [(0, "a"), (1, "a"), (2, "a"), (3, "b"), (4, "b")]
        .into_iter()
        .map(|(seq, device)| stored(seq, device))
        .collect();
    let publishes = PerDeviceRuns.encode(&records, &topics, &SendClock::now());
    assert_eq!(publishes.len(), 2);
    let mut s = session(0, 0);
    s.connected(false, 0, 0);
    for publish in &publishes {
        s.queued(publish.seqs.clone(), Lane::Live);
    }
    assert_eq!((s.in_flight(), s.records_in_flight()), (2, 5));
    assert_eq!(s.live_from(), 5);
    s.sent(1);
    s.sent(2);
    assert_eq!(s.acked(2), vec![3, 4]);
    assert_eq!(s.acked(1), vec![0, 1, 2], "one PUBACK, three records");
    assert_eq!(s.in_flight(), 0);
    // Lost before its PUBACK, a packed publish is republished whole.
    s.queued(vec![5, 6, 7], Lane::Live);
    s.sent(3);
    assert_eq!(s.connected(false, 5, 8).republished, 3);
    assert_eq!((s.backlog_next, s.backlog_end), (5, 8));
}
