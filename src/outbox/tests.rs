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
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
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
        epoch: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
    };
    assert_eq!(Meta::decode(&m.encode()), Some(m));
    assert_eq!(Meta::decode(&[1, 2, 3]), None);
    // A meta key from before epochs reads with none.
    let old = Meta::decode(&m.encode()[..36]).unwrap();
    assert_eq!((old.head, old.epoch), (1 << 40, 0));
}

#[test]
fn records_carry_the_buffers_epoch_which_a_new_buffer_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buffer");
    let mut o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    o.append(&mut records(2)).unwrap();
    let epoch = o.epoch();
    assert_eq!(epoch.len(), 26, "a ULID: {epoch}");
    let stored = o.read(0, 10).unwrap();
    assert!(stored
        .iter()
        .all(|s| s.record.epoch.as_deref() == Some(epoch.as_str())));
    drop(o);
    let mut o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    assert_eq!(o.epoch(), epoch, "kept across a restart");
    o.reopen().unwrap();
    assert_eq!(o.epoch(), epoch, "and a rebuild");
    drop(o);
    // A buffer from before epochs gets one, once.
    {
        let db = sled::open(&dir).unwrap();
        let meta = db.get(META_KEY).unwrap().unwrap();
        db.insert(META_KEY, &meta[..36]).unwrap();
        db.flush().unwrap();
    }
    let o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    let given = o.epoch();
    assert_ne!(given, epoch);
    drop(o);
    let o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    assert_eq!(o.epoch(), given);
    drop(o);
    std::fs::remove_dir_all(&dir).unwrap();
    let o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    assert_ne!(o.epoch(), given, "a new buffer, a new epoch");
    assert_eq!(o.head(), 0);
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
fn unreadable_or_misnumbered_slots_are_quarantined_and_the_rest_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buffer");
    let mut o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    o.append(&mut records(5)).unwrap();
    let slot = |o: &Outbox, seq: u64| o.db.get(slot_key(seq, 16)).unwrap().unwrap().to_vec();
    let good = slot(&o, 1);
    let json = serde_json::to_vec(&o.read(1, 1).unwrap()[0].record).unwrap();
    let header_len = good.len() - json.len();
    // Slot 1 keeps its header but holds broken JSON; slot 2 holds record 1;
    // slot 3 is gone.
    let mut broken = good[..header_len].to_vec();
    broken.extend_from_slice(b"{\"schema\":");
    let mut misnumbered = slot(&o, 2)[..header_len].to_vec();
    misnumbered.extend_from_slice(&good[header_len..]);
    o.db.insert(slot_key(1, 16), broken.clone()).unwrap();
    o.db.insert(slot_key(2, 16), misnumbered.clone()).unwrap();
    o.db.remove(slot_key(3, 16)).unwrap();
    assert!(
        o.oldest_age_ms().is_some(),
        "the age comes from the header alone"
    );

    assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![0, 4]);
    assert_eq!(o.quarantined(), 3);
    assert_eq!(o.pending(), 2, "the quarantined slots are released");
    o.ack(0).unwrap();
    o.ack(4).unwrap();
    assert_eq!(o.tail(), 5, "nothing holds the tail");

    let mut out = Vec::new();
    assert_eq!(export_quarantine(&dir, &mut out).unwrap(), 3);
    let entries: Vec<QuarantineEntry> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        entries[0].hex.as_deref(),
        Some(crate::codec::hex::hex(&broken).as_str())
    );
    assert_eq!(
        entries[1].hex.as_deref(),
        Some(crate::codec::hex::hex(&misnumbered).as_str())
    );
    assert!(entries.iter().all(|e| !e.error.is_empty()));
    assert!(
        entries[0].error.contains("Eof error"),
        "{}",
        entries[0].error
    );
    let mode = std::fs::metadata(Quarantine::path_for(&dir))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    drop(o);
    let o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    assert_eq!(o.quarantined(), 3, "counted again at open");
}

/// The raw value of slot `seq`.
fn raw_slot(o: &Outbox, seq: u64) -> Vec<u8> {
    o.db.get(slot_key(seq, o.meta.capacity))
        .unwrap()
        .expect("a slot")
        .to_vec()
}

/// Occurrences of `needle` in the files of the buffer directory.
fn on_disk(dir: &Path, needle: &[u8]) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if let Ok(bytes) = std::fs::read(&path) {
            count += bytes.windows(needle.len()).filter(|w| *w == needle).count();
        }
    }
    count
}

#[test]
fn released_slots_hold_nothing_of_their_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(64, FullPolicy::DropOldest)).unwrap();
    let mut batch = records(10);
    for r in &mut batch {
        r.device_id = "marker-device-0042".into();
    }
    o.append(&mut batch).unwrap();
    for seq in [1, 0, 2, 3, 4, 5] {
        o.ack(seq).unwrap();
    }
    for seq in 0..6 {
        assert_eq!(
            raw_slot(&o, seq),
            seq.to_be_bytes(),
            "slot {seq} is released"
        );
    }
    for seq in 6..10 {
        let stored = decode_slot(seq, &raw_slot(&o, seq)).expect("unreleased slots read");
        assert_eq!(stored.record.device_id, "marker-device-0042");
    }
    assert_eq!(seqs(&o.read(0, 100).unwrap()), vec![6, 7, 8, 9]);
    // Still so after a reopen.
    drop(o);
    let o = Outbox::open(dir.path(), options(64, FullPolicy::DropOldest)).unwrap();
    assert_eq!(raw_slot(&o, 3), 3u64.to_be_bytes());
    assert_eq!(o.tail(), 6);

    // Expired records are released too.
    let dir = tempfile::tempdir().unwrap();
    let mut aged = options(64, FullPolicy::DropOldest);
    aged.max_age = Some(std::time::Duration::from_millis(1));
    let mut o = Outbox::open(dir.path(), aged).unwrap();
    o.append(&mut records(3)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = o.append(&mut records(1)).unwrap();
    assert_eq!(out.expired, 3);
    for seq in 0..3 {
        assert_eq!(raw_slot(&o, seq), seq.to_be_bytes(), "expired slot {seq}");
    }
    assert!(decode_slot(3, &raw_slot(&o, 3)).is_ok());

    // Acknowledged while the database could not be written (a rebuild
    // pending): released once the rebuild is done.
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(16, FullPolicy::DropOldest)).unwrap();
    o.append(&mut records(3)).unwrap();
    o.unusable = true;
    o.ack(0).unwrap();
    o.ack(1).unwrap();
    o.reopen().unwrap();
    assert_eq!(o.tail(), 2);
    for seq in 0..2 {
        assert_eq!(
            raw_slot(&o, seq),
            seq.to_be_bytes(),
            "slot {seq} released after the rebuild"
        );
    }
    assert!(decode_slot(2, &raw_slot(&o, 2)).is_ok());

    // A full ring: the records dropped to make room are overwritten by the
    // new ones in their slots, never by a released marker.
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(4, FullPolicy::DropOldest)).unwrap();
    o.append(&mut records(4)).unwrap();
    let out = o.append(&mut records(2)).unwrap();
    assert_eq!((out.accepted, out.dropped_oldest), (vec![4, 5], 2));
    for seq in 4..6 {
        assert!(
            decode_slot(seq, &raw_slot(&o, seq)).is_ok(),
            "record {seq} is in its slot"
        );
    }
    assert_eq!(seqs(&o.read(0, 10).unwrap()), vec![2, 3, 4, 5]);
}

/// What sled's files keep of released records: overwriting a slot writes a
/// new value to the log; the old bytes stay in their segment until sled
/// reuses it. Prints the counts (`cargo test -- --nocapture released`);
/// `docs/security.md` records them.
#[test]
fn released_records_in_sleds_files_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = Outbox::open(dir.path(), options(1000, FullPolicy::DropOldest)).unwrap();
    let marker = b"marker-device-0043";
    let mut batch = records(100);
    for r in &mut batch {
        r.device_id = String::from_utf8(marker.to_vec()).unwrap();
    }
    o.append(&mut batch).unwrap();
    let stored = on_disk(dir.path(), marker);
    for seq in 0..100 {
        o.ack(seq).unwrap();
    }
    o.sync().unwrap();
    let after_ack = on_disk(dir.path(), marker);
    // Later traffic, acknowledged as it goes.
    let mut churned = 0;
    let mut curve = Vec::new();
    for round in 1..=40 {
        let out = o.append(&mut records(500)).unwrap();
        for seq in out.accepted {
            o.ack(seq).unwrap();
        }
        churned += 500;
        if round % 4 == 0 {
            o.sync().unwrap();
            curve.push(format!("{churned}: {}", on_disk(dir.path(), marker)));
        }
    }
    println!(
        "released records in sled's files: {stored} copies of 100 records when stored, {after_ack} after their acknowledgement; after more records: {}",
        curve.join(", ")
    );
    assert!(stored >= 100, "the measure finds stored records");
    assert!(
        curve.last().is_some_and(|last| last.ends_with(": 0")),
        "sled reused the segments that held them"
    );
}

#[test]
fn the_buffer_directory_is_the_gateways_alone() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("state/buffer");
    drop(Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap());
    assert_eq!(mode(&dir), 0o700, "created 0700");
    assert_eq!(mode(&root.path().join("state")), 0o700, "with its parents");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    drop(Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap());
    assert_eq!(mode(&dir), 0o700, "an open one is closed up");
}

#[test]
fn a_message_sent_again_after_its_record_was_stored_is_not_stored_twice() {
    use crate::record::InputKey;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buffer");
    let from = |pkid: u16, topic: &str, payload: &[u8], dup: bool| {
        let mut r = records(1);
        r[0].input = Some(InputKey::of(pkid, topic, payload, dup));
        r
    };
    let mut o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    let first = o.append(&mut from(7, "hub/1", b"hr=72", false)).unwrap();
    assert_eq!(first.accepted, vec![0]);
    // The resend, marked DUP: recognised.
    let again = o.append(&mut from(7, "hub/1", b"hr=72", true)).unwrap();
    assert_eq!((again.accepted.len(), again.redelivered), (0, 1));
    // The same reading under a new packet id, even resent, is a reading of
    // its own; so is a DUP message never stored before.
    let anew = o.append(&mut from(8, "hub/1", b"hr=72", false)).unwrap();
    assert_eq!(anew.accepted, vec![1]);
    let next_resent = o.append(&mut from(9, "hub/1", b"hr=72", true)).unwrap();
    assert_eq!(next_resent.accepted, vec![2]);
    let other_topic = o.append(&mut from(7, "hub/2", b"hr=72", true)).unwrap();
    assert_eq!(other_topic.accepted, vec![3]);
    // Within one batch too.
    let mut batch = from(10, "hub/3", b"hr=80", false);
    batch.extend(from(10, "hub/3", b"hr=80", true));
    let both = o.append(&mut batch).unwrap();
    assert_eq!((both.accepted, both.redelivered), (vec![4], 1));
    drop(o);

    // The ledger is durable with the records.
    let mut o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    let after_restart = o.append(&mut from(7, "hub/1", b"hr=72", true)).unwrap();
    assert_eq!(after_restart.redelivered, 1);
    // It remembers the messages of the last LEDGER_SLOTS records only.
    o.append(&mut records(LEDGER_SLOTS as usize)).unwrap();
    let long_after = o.append(&mut from(7, "hub/1", b"hr=72", true)).unwrap();
    assert_eq!(long_after.accepted.len(), 1, "too old to be a resend");
    let keys = o.db.scan_prefix([b'L']).count() as u64;
    assert!(keys <= LEDGER_SLOTS, "the ledger does not grow: {keys}");
}

#[test]
fn why_a_slot_is_unreadable_never_quotes_what_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("buffer");
    let mut o = Outbox::open(&dir, options(16, FullPolicy::DropOldest)).unwrap();
    o.append(&mut records(1)).unwrap();
    let good = raw_slot(&o, 0);
    let json = serde_json::to_vec(&o.read(0, 1).unwrap()[0].record).unwrap();
    let mut slot = good[..good.len() - json.len()].to_vec();
    // A type error whose text serde would quote: an id where a number goes.
    slot.extend_from_slice(br#"{"schema":"fitedge.record.v1","seq":"110101199003071234"}"#);
    o.db.insert(slot_key(0, 16), slot).unwrap();
    assert!(o.read(0, 1).unwrap().is_empty());
    let mut out = Vec::new();
    export_quarantine(&dir, &mut out).unwrap();
    let entry: QuarantineEntry =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert!(!entry.error.contains("1101011990"), "{}", entry.error);
    assert!(entry.error.contains("Data error"), "{}", entry.error);
}
