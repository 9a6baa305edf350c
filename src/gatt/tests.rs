//! Codec tests beyond the shared vectors (`tests/gatt_vectors.rs`): record
//! assembly, derived speed and cadence, overrides, and property tests (no
//! input panics any codec; an encoder written here round-trips).

use proptest::prelude::*;

use super::*;
use crate::codec::parse_hex;

fn bytes(hex: &str) -> Vec<u8> {
    parse_hex(hex).expect("test hex")
}

fn value(m: &Measurement, metric: &str) -> Option<f64> {
    m.values
        .iter()
        .find(|r| r.metric == metric)
        .map(|r| r.value)
}

fn push(d: &mut GattDecoder, c: u16, hex: &str) -> Vec<Measurement> {
    d.push(c, &bytes(hex)).expect("decodes")
}

#[test]
fn body_composition_halves_merge_into_one_record() {
    let mut d = GattDecoder::new(&Spec::default());
    assert!(push(&mut d, 0x2A9C, "E011C8001027C02B6829401F").is_empty());
    let [m] = &push(&mut d, 0x2A9C, "001CC800B036D606")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "body.fat_pct"), Some(20.0));
    assert_eq!(value(m, "body.muscle_mass"), Some(50.0));
    assert_eq!(value(m, "body.water_mass"), Some(40.0));
    assert_eq!(value(m, "body.weight"), Some(70.0));
    assert_eq!(value(m, "body.height"), Some(175.0));
    let fat = m.values.iter().filter(|r| r.metric == "body.fat_pct");
    assert_eq!(fat.count(), 1, "the repeated body fat is kept once");
}

#[test]
fn ftms_more_data_parts_merge_and_link_loss_drops_them() {
    let mut d = GattDecoder::new(&Spec::default());
    assert!(push(&mut d, 0x2AD2, "4100C800").is_empty());
    let [m] = &push(&mut d, 0x2AD2, "0004D00737")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "activity.power"), Some(200.0));
    assert_eq!(value(m, "activity.speed"), Some(20.0));
    assert_eq!(value(m, "activity.met"), Some(5.5));

    // A partial record does not survive a disconnect.
    assert!(push(&mut d, 0x2AD2, "4100C800").is_empty());
    d.reset();
    let [m] = &push(&mut d, 0x2AD2, "0004D00737")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "activity.power"), None);
}

#[test]
fn endless_more_data_is_bounded_and_still_delivered() {
    let mut a = Assembler::new(Options::default());
    let mut records = 0;
    for i in 0..1000u32 {
        // Remaining time only, a new value each time: no field repeats
        // within a record's parts...
        let part = [0x01, 0x10, (i & 0xFF) as u8, (i >> 8) as u8];
        records += a.push(0x2AD2, &part).expect("decodes").len();
        assert!(a.held() <= assemble::MAX_PARTS);
    }
    // ...yet each part repeats the field, so each is sent on its own.
    assert!(records >= 999, "{records}");
    // Different fields merge; a repeated one starts the next record.
    let mut a = Assembler::new(Options::default());
    let parts = ["4100C800", "8100D200", "0108D200", "0110D200", "0300D200"];
    let mut out = Vec::new();
    for p in parts.iter().cycle().take(assemble::MAX_PARTS * 2) {
        out.extend(a.push(0x2AD2, &bytes(p)).expect("decodes"));
    }
    assert_eq!(out.len(), 3, "records of five parts each");
    assert_eq!(out[0].values.len(), 5);
}

#[test]
fn a_failed_weighing_sends_no_bmi_or_height() {
    let d = decode(0x2A9D, &bytes("08FFFFE200A606"), &Options::default()).expect("decodes");
    assert!(d.values.is_empty());
    assert_eq!(d.absent, vec![("weight", "body.weight".to_string())]);
}

#[test]
fn a_counter_reset_gives_no_absurd_speed_or_cadence() {
    let mut d = GattDecoder::new(&Spec::default());
    push(&mut d, 0x2A5B, "031000000000041000000C");
    // Both counters went back (sensor reset).
    let [m] = &push(&mut d, 0x2A5B, "0301000000000801000010")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "activity.speed"), None);
    assert_eq!(value(m, "activity.cadence"), None);
}

#[test]
fn overrides_may_name_the_aliased_characteristic() {
    let spec: Spec = toml::from_str(
        r#"
        alias = { "2ACE" = "2AD2" }
        [[override]]
        characteristic = "2ACE"
        field = "average_power"
        drop = true
        "#,
    )
    .expect("spec");
    let mut d = GattDecoder::new(&spec);
    let [m] = &push(&mut d, 0x2ACE, "8000B004BE00")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "activity.speed"), Some(12.0));
    assert_eq!(value(m, "activity.average_power"), None);
}

#[test]
fn a_broken_part_drops_the_partial_record() {
    let mut d = GattDecoder::new(&Spec::default());
    assert!(push(&mut d, 0x2AD2, "4100C800").is_empty());
    assert!(d.push(0x2AD2, &bytes("4100C8")).is_err());
    let [m] = &push(&mut d, 0x2AD2, "0000D007")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "activity.power"), None);
}

#[test]
fn cadence_and_speed_come_from_consecutive_samples_across_wraps() {
    let mut d = GattDecoder::new(&Spec::default());
    let [first] = &push(&mut d, 0x2A5B, "0340E20100FFFFFFFF0002")[..] else {
        panic!("one record");
    };
    assert_eq!(value(first, "activity.cadence"), None, "needs two samples");
    // Crank 65535 -> 1 (2 turns) over 512 -> 1536 ticks (1 s): 120 rpm.
    let [second] = &push(&mut d, 0x2A5B, "0201000006")[..] else {
        panic!("one record");
    };
    assert_eq!(value(second, "activity.cadence"), Some(120.0));

    // Wheel: 10 turns of 2.105 m in 1 s, with the event time wrapping.
    let mut d = GattDecoder::new(&Spec::default());
    push(&mut d, 0x2A5B, "01FEFFFFFF00FE");
    let [m] = &push(&mut d, 0x2A5B, "01080000000002")[..] else {
        panic!("one record");
    };
    let speed = value(m, "activity.speed").expect("speed");
    assert!((speed - 21.05 * 3.6).abs() < 1e-6, "{speed}");
}

#[test]
fn overrides_scale_rename_and_drop_single_fields() {
    let spec: Spec = toml::from_str(
        r#"
        alias = { "2ACE" = "2AD2" }
        [[override]]
        field = "resistance_level"
        scale = 0.1
        [[override]]
        characteristic = "2AD2"
        field = "average_power"
        drop = true
        "#,
    )
    .expect("spec");
    assert!(spec.problems().is_empty(), "{:?}", spec.problems());
    let mut d = GattDecoder::new(&spec);
    // Bike data published on the cross trainer characteristic.
    let [m] = &push(&mut d, 0x2ACE, "A000B0045000BE00")[..] else {
        panic!("one record");
    };
    assert_eq!(value(m, "activity.speed"), Some(12.0));
    assert_eq!(value(m, "activity.resistance_level"), Some(8.0));
    assert_eq!(value(m, "activity.average_power"), None);
}

#[test]
fn spec_problems_name_the_key() {
    let spec: Spec = toml::from_str(
        r#"
        characteristics = ["2A37", "nope", "2A19"]
        pace_bytes = 3
        [[override]]
        field = "heart_rate"
        metric = "vital.heartrate"
        "#,
    )
    .expect("spec");
    let problems = spec.problems();
    let keys: Vec<&str> = problems.iter().map(|p| p.0).collect();
    assert_eq!(
        keys,
        [
            "characteristics",
            "characteristics",
            "pace_bytes",
            "override"
        ]
    );
    assert!(
        problems[3].2.contains("vital.heart_rate"),
        "{:?}",
        problems[3]
    );
}

#[test]
fn uuids_in_every_spelling() {
    assert_eq!(parse_uuid16("2a37"), Some(0x2A37));
    assert_eq!(parse_uuid16("0x2A37"), Some(0x2A37));
    assert_eq!(
        parse_uuid16("00002a37-0000-1000-8000-00805f9b34fb"),
        Some(0x2A37)
    );
    assert_eq!(parse_uuid16("00002a37-0000-1000-8000-00805f9b34fc"), None);
    assert_eq!(short_uuid(&full_uuid(0x180D)), Some(0x180D));
}

#[test]
fn unset_and_impossible_device_clocks_give_no_time() {
    let unset = decode(0x2A9D, &bytes("02B03600000000000000"), &Options::default());
    assert_eq!(unset.expect("decodes").device_time, None);
    let bad = decode(0x2A9D, &bytes("02B036E8070D20000000"), &Options::default());
    assert_eq!(bad.expect("decodes").device_time, None);
}

#[test]
fn status_characteristics_become_attributes() {
    let status = decode(0x2ADA, &bytes("0202"), &Options::default()).expect("decodes");
    assert_eq!(
        status.attributes["machine_status"],
        "stopped_or_paused_by_user"
    );
    assert_eq!(status.attributes["machine_status_parameter"], "paused");
    let training =
        decode(0x2AD3, &bytes("010D4D616E75616C"), &Options::default()).expect("decodes");
    assert_eq!(training.attributes["training_status"], "manual_mode");
    assert_eq!(training.attributes["training_status_text"], "Manual");
}

// --- property tests --------------------------------------------------------

proptest! {
    /// Any bytes into any codec: a value or an error, never a panic, and
    /// never a non-finite number.
    #[test]
    fn no_input_panics_any_codec(
        index in 0..CODECS.len(),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
        pace_bytes in 1usize..=2,
    ) {
        let uuid = CODECS[index].uuid;
        let options = Options { pace_bytes, ..Options::default() };
        if let Ok(d) = decode(uuid, &payload, &options) {
            let m = d.normalize(uuid, uuid, &[]).expect("codec units convert");
            prop_assert!(m.values.iter().all(|r| r.value.is_finite()));
        }
        let mut decoder = GattDecoder::new(&Spec::default());
        let _ = decoder.push(uuid, &payload);
    }
}

/// A heart rate measurement, as the test encoder writes it.
#[derive(Debug, Clone)]
struct HeartRate {
    bpm: u16,
    wide: bool,
    energy_kj: Option<u16>,
    rr: Vec<u16>,
}

fn encode_heart_rate(h: &HeartRate) -> Vec<u8> {
    let mut flags = 0u8;
    let mut body = Vec::new();
    if h.wide {
        flags |= 1;
        body.extend(h.bpm.to_le_bytes());
    } else {
        body.push(h.bpm as u8);
    }
    if let Some(e) = h.energy_kj {
        flags |= 1 << 3;
        body.extend(e.to_le_bytes());
    }
    if !h.rr.is_empty() {
        flags |= 1 << 4;
        for rr in &h.rr {
            body.extend(rr.to_le_bytes());
        }
    }
    [vec![flags], body].concat()
}

fn heart_rates() -> impl Strategy<Value = HeartRate> {
    (
        any::<bool>(),
        any::<u16>(),
        proptest::option::of(any::<u16>()),
        proptest::collection::vec(any::<u16>(), 0..8),
    )
        .prop_map(|(wide, bpm, energy_kj, rr)| HeartRate {
            bpm: if wide { bpm } else { bpm & 0xFF },
            wide,
            energy_kj,
            rr,
        })
}

/// An indoor bike record with an optional set of fields.
#[derive(Debug, Clone)]
struct Bike {
    speed: Option<u16>,
    cadence: Option<u16>,
    distance: Option<u32>,
    power: Option<i16>,
    heart_rate: Option<u8>,
    elapsed: Option<u16>,
}

fn encode_bike(b: &Bike) -> Vec<u8> {
    let mut flags = 0u16;
    let mut body = Vec::new();
    match b.speed {
        Some(s) => body.extend(s.to_le_bytes()),
        None => flags |= 1,
    }
    if let Some(c) = b.cadence {
        flags |= 1 << 2;
        body.extend(c.to_le_bytes());
    }
    if let Some(d) = b.distance {
        flags |= 1 << 4;
        body.extend(&d.to_le_bytes()[..3]);
    }
    if let Some(p) = b.power {
        flags |= 1 << 6;
        body.extend(p.to_le_bytes());
    }
    if let Some(h) = b.heart_rate {
        flags |= 1 << 9;
        body.push(h);
    }
    if let Some(e) = b.elapsed {
        flags |= 1 << 11;
        body.extend(e.to_le_bytes());
    }
    [flags.to_le_bytes().to_vec(), body].concat()
}

fn bikes() -> impl Strategy<Value = Bike> {
    (
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(0u32..0x100_0000),
        proptest::option::of(any::<i16>().prop_filter("not N/A", |p| *p != 0x7FFF)),
        proptest::option::of(any::<u8>()),
        proptest::option::of(any::<u16>()),
    )
        .prop_map(
            |(speed, cadence, distance, power, heart_rate, elapsed)| Bike {
                speed,
                cadence,
                distance,
                power,
                heart_rate,
                elapsed,
            },
        )
}

/// A blood pressure record in mmHg with SFLOAT values (exponent 0 or -1).
#[derive(Debug, Clone)]
struct Pressure {
    systolic: (i16, i8),
    diastolic: (i16, i8),
    pulse: Option<(i16, i8)>,
}

fn sfloat(mantissa: i16, exponent: i8) -> [u8; 2] {
    (((exponent as u16) & 0xF) << 12 | (mantissa as u16 & 0x0FFF)).to_le_bytes()
}

fn encode_pressure(p: &Pressure) -> Vec<u8> {
    let mut out = vec![if p.pulse.is_some() { 0x04 } else { 0 }];
    out.extend(sfloat(p.systolic.0, p.systolic.1));
    out.extend(sfloat(p.diastolic.0, p.diastolic.1));
    out.extend(sfloat(0x7FF, 0)); // mean not computed
    if let Some((m, e)) = p.pulse {
        out.extend(sfloat(m, e));
    }
    out
}

fn pressures() -> impl Strategy<Value = Pressure> {
    let reading = (0i16..2000, -1i8..=0);
    (
        reading.clone(),
        reading.clone(),
        proptest::option::of(reading),
    )
        .prop_map(|(systolic, diastolic, pulse)| Pressure {
            systolic,
            diastolic,
            pulse,
        })
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-6)
}

proptest! {
    #[test]
    fn heart_rate_round_trips(h in heart_rates()) {
        let m = decode(0x2A37, &encode_heart_rate(&h), &Options::default())
            .and_then(|d| d.normalize(0x2A37, 0x2A37, &[]))
            .expect("valid records decode");
        prop_assert!(close(value(&m, "vital.heart_rate"), h.bpm as f64));
        match h.energy_kj {
            Some(kj) => prop_assert!(close(value(&m, "activity.energy"), units::round(kj as f64 / 4.184))),
            None => prop_assert!(value(&m, "activity.energy").is_none()),
        }
        let rr: Vec<f64> = m.values.iter().filter(|r| r.metric == "vital.rr_interval").map(|r| r.value).collect();
        prop_assert_eq!(rr.len(), h.rr.len());
        for (got, sent) in rr.iter().zip(&h.rr) {
            prop_assert!((got - *sent as f64 / 1024.0).abs() < 1e-6);
        }
    }

    #[test]
    fn indoor_bike_round_trips(b in bikes()) {
        let d = decode(0x2AD2, &encode_bike(&b), &Options::default()).expect("valid records decode");
        prop_assert_eq!(d.continuation == Continuation::MoreData, b.speed.is_none());
        let m = d.normalize(0x2AD2, 0x2AD2, &[]).expect("normalizes");
        let checks = [
            ("activity.speed", b.speed.map(|s| s as f64 * 0.01)),
            ("activity.cadence", b.cadence.map(|c| c as f64 * 0.5)),
            ("activity.distance", b.distance.map(|d| d as f64)),
            ("activity.power", b.power.map(|p| p as f64)),
            ("vital.heart_rate", b.heart_rate.map(|h| h as f64)),
            ("activity.elapsed_time", b.elapsed.map(|e| e as f64)),
        ];
        for (metric, sent) in checks {
            match sent {
                Some(v) => prop_assert!(close(value(&m, metric), units::round(v)), "{metric}"),
                None => prop_assert!(value(&m, metric).is_none(), "{metric}"),
            }
        }
        prop_assert_eq!(m.values.len(), checks.iter().filter(|c| c.1.is_some()).count());
    }

    #[test]
    fn blood_pressure_round_trips(p in pressures()) {
        let m = decode(0x2A35, &encode_pressure(&p), &Options::default())
            .and_then(|d| d.normalize(0x2A35, 0x2A35, &[]))
            .expect("valid records decode");
        let expect = |(mantissa, exponent): (i16, i8)| mantissa as f64 * 10f64.powi(exponent as i32);
        prop_assert!(close(value(&m, "vital.bp_systolic"), units::round(expect(p.systolic))));
        prop_assert!(close(value(&m, "vital.bp_diastolic"), units::round(expect(p.diastolic))));
        prop_assert_eq!(&m.absent, &vec!["vital.bp_mean".to_string()]);
        match p.pulse {
            Some(pulse) => prop_assert!(close(value(&m, "vital.pulse_rate"), units::round(expect(pulse)))),
            None => prop_assert!(value(&m, "vital.pulse_rate").is_none()),
        }
    }
}
