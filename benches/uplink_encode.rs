//! What the uplink spends per record between the buffer and the wire:
//! reading stored records (the slot parsed into a record) and encoding them
//! into publishes with the default JSON encoder, in the uplink's batch size.
//!
//! `cargo bench --bench uplink_encode` (size: `FITEDGE_BENCH_RECORDS`,
//! default 200,000 buffered records; five passes, the median is printed).

use std::time::Instant;

use fitedge::config::FullPolicy;
use fitedge::outbox::{Outbox, OutboxOptions};
use fitedge::record::{Measurement, Origin, Quality, Reading, Record, Transport};
use fitedge::uplink::{Encoder, JsonRecords, SendClock, Topics};

/// Records the uplink reads at once (its default in-flight window).
const BATCH: usize = 100;

fn main() {
    let records: u64 = std::env::var("FITEDGE_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = OutboxOptions {
        max_records: records + 1,
        max_record_bytes: 16 * 1024,
        full_policy: FullPolicy::DropOldest,
        cache_bytes: 64 << 20,
        max_bytes: None,
        max_age: None,
    };
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "s".into(),
        device_id: "hw-1".into(),
        profile_id: "height-weight-station".into(),
        transport: Transport::Serial,
    };
    let mut outbox = Outbox::open(dir.path(), options).expect("outbox opens");
    let mut written = 0;
    while written < records {
        let n = 1000.min(records - written);
        let mut batch: Vec<Record> = (0..n)
            .map(|i| {
                let value = |metric: &str, unit: &str, v: f64| Reading {
                    metric: metric.into(),
                    value: v,
                    unit: unit.into(),
                    quality: Quality::Ok,
                    source_value: None,
                    source_unit: None,
                };
                let m = Measurement {
                    values: vec![
                        value("body.weight", "kg", 40.0 + (i % 500) as f64 / 10.0),
                        value("body.height", "cm", 150.0 + (i % 400) as f64 / 10.0),
                    ],
                    ..Default::default()
                };
                Record::new(&origin, m)
            })
            .collect();
        outbox.append(&mut batch).expect("append");
        written += n;
    }
    let topics = Topics {
        prefix: "fitedge".into(),
        site_id: "s".into(),
        gateway_id: "gw".into(),
    };
    let clock = SendClock::now();
    let mut read_ns = Vec::new();
    let mut total_ns = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let mut read_time = std::time::Duration::ZERO;
        let mut seq = 0;
        bytes = 0;
        while seq < records {
            let t = Instant::now();
            let stored = outbox.read(seq, BATCH).expect("read");
            read_time += t.elapsed();
            seq = stored.last().map_or(records, |s| s.seq + 1);
            for publish in JsonRecords.encode(&stored, &topics, &clock) {
                bytes += publish.payload.len();
            }
        }
        total_ns.push(started.elapsed().as_nanos() as f64 / records as f64);
        read_ns.push(read_time.as_nanos() as f64 / records as f64);
    }
    // The part of reading that parsing the stored JSON takes (what the
    // uplink did not do when it published the stored bytes as they were).
    let sample: Vec<Vec<u8>> = outbox
        .read(0, 10_000)
        .expect("read")
        .iter()
        .map(|s| serde_json::to_vec(&s.record).expect("json"))
        .collect();
    let mut parse_ns = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for json in &sample {
            let record: Record = serde_json::from_slice(json).expect("parses");
            std::hint::black_box(record);
        }
        parse_ns.push(t.elapsed().as_nanos() as f64 / sample.len() as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (total, read) = (median(&mut total_ns), median(&mut read_ns));
    let parse = median(&mut parse_ns);
    println!(
        "uplink_encode: {records} records of {} bytes, batches of {BATCH}: median {total:.0} ns per record \
         ({read:.0} ns reading the slot, of which {parse:.0} ns parsing its record; {:.0} ns encoding), \
         {:.0} records/s",
        bytes / records as usize,
        total - read,
        1e9 / total
    );
}
