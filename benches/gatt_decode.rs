//! How fast one peripheral's notifications decode through the built-in GATT
//! codecs (assembly and normalization included), and how much memory the
//! decoder holds: a gateway on a Raspberry-Pi class box must keep up with
//! several straps and machines notifying at their full rates.
//!
//! `cargo bench --bench gatt_decode` (size: `FITEDGE_BENCH_NOTIFICATIONS`,
//! default 1,000,000 notifications per run, 5 runs).

use std::time::Instant;

use fitedge::codec::parse_hex;
use fitedge::gatt::{GattDecoder, Spec};

/// (characteristic, value): the shared vectors' kinds, split records too.
const MIX: &[(u16, &str)] = &[
    (0x2A37, "1E4BD20434030004"),
    (0x2A37, "063C"),
    (0x2A9D, "0E2C33E8070511081E0F01E200A606"),
    (0x2A9C, "E011C8001027C02B6829401F"),
    (0x2A9C, "001CC800B036D606"),
    (0x2A35, "1E790051005E00E8070511081E0F4800010400"),
    (0x2A1C, "07DA0300FFE8070511081E0F09"),
    (0x2A5B, "0340E20100FFFFFFFF0002"),
    (0x2A63, "1000B400881300000010"),
    (0x2ACD, "8C055203D204001400FF7F550058020A875802"),
    (0x2AD2, "4100C800"),
    (0x2AD2, "0004D00737"),
    (0x2AD1, "2C003CC800DC05007800B400"),
];

fn main() {
    let n: usize = std::env::var("FITEDGE_BENCH_NOTIFICATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mix: Vec<(u16, Vec<u8>)> = MIX
        .iter()
        .map(|(c, h)| (*c, parse_hex(h).expect("bench vector")))
        .collect();
    let mut per_notification_ns = Vec::new();
    for _ in 0..5 {
        let mut decoder = GattDecoder::new(&Spec::default());
        let mut records = 0usize;
        let started = Instant::now();
        for i in 0..n {
            let (c, value) = &mix[i % mix.len()];
            records += decoder.push(*c, value).expect("valid vector").len();
        }
        let took = started.elapsed();
        per_notification_ns.push(took.as_nanos() as f64 / n as f64);
        std::hint::black_box(records);
    }
    per_notification_ns.sort_by(f64::total_cmp);
    let median = per_notification_ns[per_notification_ns.len() / 2];
    println!(
        "gatt_decode: {n} notifications x 5 runs: median {median:.0} ns per notification ({:.0} per second on one core)",
        1e9 / median
    );
}
