//! Unit tests of the ring: append, read, acknowledge, wrap, limits, rebuild
//! and the offline inspection tools.

use super::*;
use crate::record::{Measurement, Origin, Transport};

fn options(max_records: u64, full_policy: FullPolicy) -> OutboxOptions {
    OutboxOptions {
        max_records,
        max_record_bytes: 4096,
        full_policy,
        cache_bytes: 1 << 20,
        max_bytes: None,
        max_age: None,
    }
}

fn records(n: usize) -> Vec<Record> {
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "s".into(),
        device_id: "dev-1".into(),
        profile_id: "p".into(),
        transport: Transport::Serial,
    };
    (0..n)
        .map(|_| Record::new(&origin, Measurement::default()))
        .collect()
}

fn seqs(stored: &[Stored]) -> Vec<u64> {
    stored.iter().map(|s| s.seq).collect()
}

#[test]
fn append_read_ack_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
    let mut batch = records(3);
    let out = o.append(&mut batch).unwrap();
    assert_eq!(out.accepted, vec![0, 1, 2]);
    assert_eq!(batch[2].seq, 2);
    let stored = o.read(0, 10).unwrap();
    assert_eq!(seqs(&stored), vec![0, 1, 2]);
    assert_eq!(stored[0].record.device_id, "dev-1");
    assert_eq!(
        stored[1].record, batch[1],
        "the stored record is the one appended"
    );
    o.ack(1).unwrap();
    assert_eq!(o.tail(), 0, "tail waits for record 0");
    assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![0, 2]);
    o.ack(0).unwrap();
    assert_eq!(o.tail(), 2);
    assert_eq!(o.pending(), 1);
    o.ack(0).unwrap();
    o.ack(99).unwrap();
    assert_eq!(o.pending(), 1);
}

#[test]
fn unacknowledged_records_survive_reopen_and_sequence_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        o.append(&mut records(5)).unwrap();
        o.ack(0).unwrap();
        o.ack(1).unwrap();
    }
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
    assert_eq!(o.tail(), 2);
    assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![2, 3, 4]);
    assert_eq!(o.append(&mut records(1)).unwrap().accepted, vec![5]);
}

#[test]
fn the_ring_wraps_and_drop_oldest_overwrites_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
    for seq in 0..40 {
        o.append(&mut records(1)).unwrap();
        o.ack(seq).unwrap();
    }
    assert_eq!((o.tail(), o.head()), (40, 40));
    let out = o.append(&mut records(20)).unwrap();
    assert_eq!(out.dropped_oldest, 4);
    assert_eq!(seqs(&o.read(0, 100).unwrap()), (44..60).collect::<Vec<_>>());
}

#[test]
fn refuse_newest_keeps_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::RefuseNewest)).unwrap();
    let out = o.append(&mut records(20)).unwrap();
    assert_eq!((out.accepted.len(), out.refused), (16, 4));
    assert_eq!(seqs(&o.read(0, 100).unwrap()), (0..16).collect::<Vec<_>>());
}

#[test]
fn oversized_records_are_refused_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(
        dir.path(),
        OutboxOptions {
            max_record_bytes: 600,
            ..options(16, FullPolicy::DropOldest)
        },
    )
    .unwrap();
    let mut batch = records(2);
    batch[0]
        .attributes
        .insert("blob".into(), serde_json::Value::String("x".repeat(1000)));
    let out = o.append(&mut batch).unwrap();
    assert_eq!((out.accepted, out.refused), (vec![0], 1));
}

#[test]
fn a_resized_ring_keeps_its_size_until_it_drains() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        o.append(&mut records(3)).unwrap();
    }
    {
        let mut o = Outbox::open(dir.path(), options(32, FullPolicy::DropOldest)).unwrap();
        assert_eq!(o.capacity(), 16);
        assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![0, 1, 2]);
        for s in 0..3 {
            o.ack(s).unwrap();
        }
    }
    let o = Outbox::open(dir.path(), options(32, FullPolicy::DropOldest)).unwrap();
    assert_eq!(o.capacity(), 32);
}

#[test]
fn an_unopenable_database_is_moved_aside_and_replaced() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("buffer");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("conf"), b"\x00garbage\xff").unwrap();
    std::fs::write(dir.join("db"), vec![0xAB; 4096]).unwrap();
    let (mut o, aside) =
        Outbox::open_or_recover(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    let aside = aside.expect("moved aside");
    assert!(aside.exists());
    assert_eq!(o.append(&mut records(1)).unwrap().accepted, vec![0]);
}

#[test]
fn reopening_keeps_records_and_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        o.append(&mut records(4)).unwrap();
        o.ack(0).unwrap();
        o.reopen().unwrap();
        assert_eq!((o.head(), o.tail()), (4, 1));
        o.append(&mut records(2)).unwrap();
        o.ack(1).unwrap();
    }
    let o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
    assert_eq!((o.head(), o.tail()), (6, 2));
    assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![2, 3, 4, 5]);
}

#[test]
fn meta_round_trips() {
    let m = Meta {
        version: 1,
        capacity: 7,
        head: 1 << 40,
        tail: 3,
        bytes_appended: 99,
    };
    assert_eq!(Meta::decode(&m.encode()), Some(m));
    assert_eq!(Meta::decode(&[1, 2, 3]), None);
}

#[test]
fn a_byte_limit_applies_the_full_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(
        dir.path(),
        OutboxOptions {
            max_bytes: Some(4000),
            ..options(1000, FullPolicy::DropOldest)
        },
    )
    .unwrap();
    o.append(&mut records(10)).unwrap();
    let size = o.meta.bytes_appended / 10;
    let out = o.append(&mut records(40)).unwrap();
    assert!(out.dropped_oldest > 0, "{out:?}");
    assert!(
        o.pending() * size <= 4000 + size,
        "pending {} of {size} bytes",
        o.pending()
    );
    let mut refusing = Outbox::open(
        tempfile::tempdir().unwrap().path(),
        OutboxOptions {
            max_bytes: Some(4000),
            ..options(1000, FullPolicy::RefuseNewest)
        },
    )
    .unwrap();
    let out = refusing.append(&mut records(50)).unwrap();
    assert!(out.refused > 0 && out.accepted.len() < 50);
}

#[test]
fn records_past_their_age_are_dropped_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(
        dir.path(),
        OutboxOptions {
            max_age: Some(std::time::Duration::from_millis(300)),
            ..options(100, FullPolicy::DropOldest)
        },
    )
    .unwrap();
    o.append(&mut records(3)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let out = o.append(&mut records(2)).unwrap();
    assert_eq!(out.expired, 3);
    assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![3, 4]);
}

#[test]
fn slots_carry_the_boot_clock_and_inspection_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
        o.append(&mut records(3)).unwrap();
        o.ack(0).unwrap();
        let stored = o.read(0, 1).unwrap();
        assert_eq!(stored[0].stamp.boot_id, Stamp::now().boot_id);
        assert!(o.oldest_age_ms().is_some());
    }
    let report = inspect(dir.path()).unwrap();
    assert_eq!(
        (report.head, report.tail, report.pending, report.capacity),
        (3, 1, 2, 16)
    );
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let mut out = Vec::new();
    export(dir.path(), &mut out).unwrap();
    let lines: Vec<Record> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn a_slot_whose_record_is_unreadable_or_misnumbered_reads_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
    o.append(&mut records(2)).unwrap();
    let slot = |seq: u64| o.db.get(slot_key(seq, 16)).unwrap().unwrap().to_vec();
    let good = slot(0);
    let json = serde_json::to_vec(&o.read(0, 1).unwrap()[0].record).unwrap();
    let header_len = good.len() - json.len();
    // Slot 0 keeps its header but holds broken JSON; slot 1 holds record 0.
    let mut broken = good[..header_len].to_vec();
    broken.extend_from_slice(b"{\"schema\":");
    let mut misnumbered = slot(1)[..header_len].to_vec();
    misnumbered.extend_from_slice(&good[header_len..]);
    o.db.insert(slot_key(0, 16), broken).unwrap();
    o.db.insert(slot_key(1, 16), misnumbered).unwrap();
    for seq in [0, 1] {
        assert!(
            matches!(o.read(seq, 1), Err(OutboxError::Corrupt { seq: s, .. }) if s == seq),
            "slot {seq}"
        );
    }
    assert!(
        o.oldest_age_ms().is_some(),
        "the age comes from the header alone"
    );
}
