//! Decoder tests: each decode type, fields, roles and their errors.

use super::*;
use crate::codec::parse_hex;
use crate::record::Quality;

fn field(toml_text: &str) -> FieldSpec {
    toml::from_str(toml_text).unwrap()
}

fn spec(toml_text: &str) -> DecodeSpec {
    toml::from_str(toml_text).unwrap()
}

fn run(spec_text: &str, fields: &[&str], payload: &[u8]) -> Result<Measurement, DecodeError> {
    let fields: Vec<FieldSpec> = fields.iter().map(|f| field(f)).collect();
    decode(
        &spec(spec_text),
        &fields,
        payload,
        &DecodeContext::for_tests(),
    )
}

fn psn(id: &str) -> Option<String> {
    Some(Keyring::for_tests().pseudonym(id).current)
}

fn value(m: &Measurement, metric: &str) -> f64 {
    m.values.iter().find(|r| r.metric == metric).unwrap().value
}

const KV: &str = "type = \"key_value\"";

#[test]
fn key_value_fields_become_canonical_readings() {
    let m = run(
        KV,
        &[
            "key = \"ID\"\nrole = \"subject\"",
            "key = \"HT\"\nmetric = \"body.height\"",
            "key = \"WT\"\nmetric = \"body.weight\"",
        ],
        b"ID=S0001;HT=172.5;WT=65.40",
    )
    .unwrap();
    assert_eq!(m.subject_ref, psn("S0001"));
    assert_eq!(
        (value(&m, "body.height"), value(&m, "body.weight")),
        (172.5, 65.4)
    );
    assert_eq!(m.values[1].quality, Quality::Ok);
    assert_eq!(m.values[1].source_value, None);
}

#[test]
fn unit_conversion_and_scale_keep_the_source() {
    let m = run(
        KV,
        &["key = \"W\"\nmetric = \"body.weight\"\nunit = \"lb\"\nscale = 0.1"],
        b"W=1442",
    )
    .unwrap();
    assert_eq!(m.values[0].value, 65.40802);
    assert_eq!(m.values[0].source_value, Some(1442.0));
    assert_eq!(m.values[0].source_unit.as_deref(), Some("lb"));
}

#[test]
fn out_of_range_values_are_kept_and_flagged() {
    let m = run(KV, &["key = \"G\"\nmetric = \"strength.grip\""], b"G=180.0").unwrap();
    assert_eq!(
        (m.values[0].value, m.values[0].quality),
        (180.0, Quality::OutOfRange)
    );
}

#[test]
fn csv_by_position_with_tag() {
    let spec = "type = \"csv\"\ntag = \"$VC\"";
    let f = "index = 2\nmetric = \"lung.vital_capacity\"";
    assert_eq!(
        value(
            &run(spec, &[f], b"$VC,S0001,3450,0").unwrap(),
            "lung.vital_capacity"
        ),
        3450.0
    );
    let err = run(spec, &[f], b"$XX,S0001,3450,0").unwrap_err();
    assert!(matches!(err, DecodeError::TagMismatch { .. }) && !err.is_corrupt());
}

#[test]
fn regex_named_captures() {
    let spec = "type = \"regex\"\npattern = 'GRIP (?P<side>[LR]) (?P<kg>\\d+\\.\\d)kg'";
    let m = run(
        spec,
        &[
            "key = \"kg\"\nmetric = \"strength.grip\"",
            "key = \"side\"\nrole = \"attribute\"\nmap = { L = \"left\", R = \"right\" }",
        ],
        b"GRIP R 41.2kg",
    )
    .unwrap();
    assert_eq!(value(&m, "strength.grip"), 41.2);
    assert_eq!(m.attributes["side"], "right");
    assert_eq!(
        run(
            spec,
            &["key = \"kg\"\nmetric = \"strength.grip\""],
            b"hello"
        )
        .unwrap_err(),
        DecodeError::NoMatch
    );
}

#[test]
fn binary_fields_signed_scaled_with_expectations() {
    let spec = "type = \"binary\"\nexpect = [{ offset = 3, hex = \"21\" }]";
    let f = "offset = 4\ntype = \"i16\"\nmetric = \"flex.sit_and_reach\"\nscale = 0.1";
    let a = "offset = 6\ntype = \"u16\"\nrole = \"attribute\"\nname = \"attempt\"";
    let m = run(spec, &[f, a], &parse_hex("AA550521FFD60002FD").unwrap()).unwrap();
    assert_eq!(value(&m, "flex.sit_and_reach"), -4.2);
    assert_eq!(m.attributes["attempt"], 2.0);
    assert!(matches!(
        run(spec, &[f], &parse_hex("AA550522FFD60002FD").unwrap()),
        Err(DecodeError::TagMismatch { .. })
    ));
    assert!(matches!(
        run(spec, &[f], &parse_hex("AA550521FF").unwrap()),
        Err(DecodeError::TooShort { .. })
    ));
}

#[test]
fn flag_gates_sentinels_and_bit_fields() {
    let spec = "type = \"binary\"";
    let hr = "offset = 1\ntype = \"u8\"\nmetric = \"vital.heart_rate\"";
    let energy = "offset = 2\ntype = \"u16\"\nendian = \"little\"\nmetric = \"activity.energy\"\nunit = \"kJ\"\nwhen = { offset = 0, mask = 0x08 }";
    let rr = "offset = 4\ntype = \"u16\"\nendian = \"little\"\nmetric = \"vital.rr_interval\"\nabsent = [65535]\nscale = 0.0009765625\noptional = true";
    let m = run(spec, &[hr, energy, rr], &[0x08, 72, 0x10, 0x00, 0xFF, 0xFF]).unwrap();
    assert_eq!(value(&m, "vital.heart_rate"), 72.0);
    assert_eq!(value(&m, "activity.energy"), 3.824092);
    assert_eq!(m.absent, vec!["vital.rr_interval".to_string()]);
    let m = run(spec, &[hr, energy], &[0x00, 72]).unwrap();
    assert_eq!(m.values.len(), 1, "energy gated out by its flag");
    let nibble =
        "offset = 0\ntype = \"u8\"\nmask = 0x0F\nshift = 4\nrole = \"attribute\"\nname = \"hi\"";
    assert_eq!(
        run(spec, &[nibble], &[0xA5]).unwrap().attributes["hi"],
        10.0
    );
}

#[test]
fn json_pointers_with_requirements() {
    let spec = "type = \"json\"\nrequire = { \"/item\" = \"sit_ups_1min\" }";
    let fields = [
        "pointer = \"/count\"\nmetric = \"endurance.sit_ups_1min\"",
        "pointer = \"/sid\"\nrole = \"subject\"",
    ];
    let m = run(
        spec,
        &fields,
        br#"{"item":"sit_ups_1min","sid":"S0001","count":32}"#,
    )
    .unwrap();
    assert_eq!(
        (value(&m, "endurance.sit_ups_1min"), m.subject_ref),
        (32.0, psn("S0001"))
    );
    assert!(matches!(
        run(spec, &fields, br#"{"item":"push_ups","count":3}"#),
        Err(DecodeError::TagMismatch { .. })
    ));
    assert!(matches!(
        run(spec, &fields, b"{not json"),
        Err(DecodeError::NotJson(_))
    ));
    let m = run(
        "type = \"json\"",
        &["pointer = \"/hr\"\nmetric = \"vital.heart_rate\""],
        br#"{"hr":null}"#,
    )
    .unwrap();
    assert_eq!(m.absent, ["vital.heart_rate"]);
}

#[test]
fn modbus_registers_with_scale_and_exceptions() {
    let fields = [
        "register = 0\nmetric = \"strength.load\"\nscale = 0.1",
        "register = 1\nmetric = \"strength.repetitions\"",
    ];
    let m = run(
        "type = \"modbus\"",
        &fields,
        &parse_hex("01030400FA000CDA07").unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            value(&m, "strength.load"),
            value(&m, "strength.repetitions")
        ),
        (25.0, 12.0)
    );
    let err = run(
        "type = \"modbus\"",
        &fields,
        &parse_hex("018302C0F1").unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        DecodeError::ModbusException {
            slave: 1,
            code: 2,
            meaning: "illegal_data_address"
        }
    );
    // A 32-bit value over two registers, low word first.
    let f = "register = 0\ntype = \"u32\"\nword_order = \"little\"\nmetric = \"activity.distance\"";
    let m = run(
        "type = \"modbus\"",
        &[f],
        &[1, 3, 4, 0x00, 0x01, 0x00, 0x02, 0, 0],
    )
    .unwrap();
    assert_eq!(value(&m, "activity.distance"), (2 * 65536 + 1) as f64);
}

#[test]
fn subjects_become_keyed_pseudonyms_and_bad_ids_are_never_quoted() {
    let f = field("key = \"ID\"\nrole = \"subject\"\ncheck = \"cn_resident_id\"");
    let spec = spec(KV);
    let ring = |key: &[u8]| DecodeContext {
        keys: Some(std::sync::Arc::new(Keyring::new(
            crate::identity::Key::new(key).unwrap(),
        ))),
    };
    let ctx = ring(b"site-key-0123456789");
    let m = decode(
        &spec,
        std::slice::from_ref(&f),
        b"ID=11010519491231002X",
        &ctx,
    )
    .unwrap();
    let subject = m.subject_ref.unwrap();
    assert!(
        subject.starts_with("psn1:") && subject.len() == 5 + 64 && !subject.contains("1101051949"),
        "{subject}"
    );
    let other_key = ring(b"other-key-0123456789");
    let other = decode(
        &spec,
        std::slice::from_ref(&f),
        b"ID=11010519491231002X",
        &other_key,
    );
    assert_ne!(other.unwrap().subject_ref.unwrap(), subject);
    let bad = decode(
        &spec,
        std::slice::from_ref(&f),
        b"ID=110105194912310020",
        &ctx,
    )
    .unwrap_err();
    assert!(matches!(
        bad,
        DecodeError::BadSubject {
            problem: IdProblem::CheckDigit,
            ..
        }
    ));
    assert!(!bad.to_string().contains("1101051949"), "{bad}");
    // Without a key a subject is refused, never sent as typed.
    assert_eq!(
        decode(
            &spec,
            std::slice::from_ref(&f),
            b"ID=11010519491231002X",
            &DecodeContext::default()
        ),
        Err(DecodeError::NoKey)
    );
    // An empty id (no card tapped) is no subject at all.
    let kv = field("key = \"ID\"\nrole = \"subject\"\noptional = true");
    let none = decode(&spec, &[kv], b"ID=", &DecodeContext::default()).unwrap();
    assert_eq!(none.subject_ref, None);
}

#[test]
fn missing_and_malformed_fields_are_errors() {
    let f = "key = \"HT\"\nmetric = \"body.height\"";
    assert_eq!(
        run(KV, &[f], b"WT=1").unwrap_err(),
        DecodeError::MissingField {
            field: "key \"HT\"".into()
        }
    );
    assert!(matches!(
        run(KV, &[f], b"HT=abc").unwrap_err(),
        DecodeError::BadNumber { .. }
    ));
    assert!(matches!(
        run(KV, &[f], b"HT=NaN").unwrap_err(),
        DecodeError::BadNumber { .. }
    ));
    assert_eq!(
        run(KV, &[f], &[0xFF, 0xFE]).unwrap_err(),
        DecodeError::NotText
    );
    assert!(run(
        KV,
        &["key = \"HT\"\nmetric = \"body.height\"\noptional = true"],
        b"WT=1"
    )
    .unwrap()
    .values
    .is_empty());
}

#[test]
fn numbers_too_large_for_the_payload_are_rejected_not_null() {
    let f = "key = \"W\"\nmetric = \"body.weight\"\nscale = 10.0";
    assert!(matches!(
        run(KV, &[f], b"W=1e308"),
        Err(DecodeError::BadNumber { .. })
    ));
    let j = "pointer = \"/w\"\nmetric = \"body.weight\"\nscale = 1e10";
    assert!(matches!(
        run("type = \"json\"", &[j], br#"{"w":1e305}"#),
        Err(DecodeError::BadNumber { .. })
    ));
}

#[test]
fn race_times_in_minutes_and_seconds() {
    let f = "index = 2\nmetric = \"run.time_800m\"\nformat = \"minutes_seconds\"";
    for (text, seconds) in [
        ("3:45.2", 225.2),
        ("3'45\"2", 225.2),
        ("3'45.2", 225.2),
        ("4:05", 245.0),
    ] {
        let m = run(
            "type = \"csv\"",
            &[f],
            format!("$T800,S1,{text}").as_bytes(),
        )
        .unwrap();
        assert!(
            (value(&m, "run.time_800m") - seconds).abs() < 1e-9,
            "{text}"
        );
    }
    assert!(matches!(
        run("type = \"csv\"", &[f], b"$T800,S1,3:75.0"),
        Err(DecodeError::BadNumber { .. })
    ));
}

#[test]
fn modbus_replies_from_other_slaves_are_not_ours() {
    let f = "register = 0\nmetric = \"strength.load\"\nscale = 0.1";
    let err = run(
        "type = \"modbus\"\nslave = 2",
        &[f],
        &parse_hex("01030400FA000CDA07").unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, DecodeError::TagMismatch { .. }) && !err.is_corrupt());
}

#[test]
fn multi_line_key_value_records_and_integer_attributes() {
    let m = run(
        KV,
        &[
            "key = \"hei\"\nmetric = \"body.height\"",
            "key = \"n\"\nrole = \"attribute\"",
        ],
        b"hei=172\nn=3;over",
    )
    .unwrap();
    assert_eq!(value(&m, "body.height"), 172.0);
    assert_eq!(m.attributes["n"], serde_json::json!(3));
}

#[test]
fn bcd_subjects_keep_leading_zeros_and_ids_are_case_blind() {
    let f = "offset = 0\ntype = \"bcd\"\nlength = 4\nrole = \"subject\"";
    let m = run(
        "type = \"binary\"",
        &[
            f,
            "offset = 4\ntype = \"u8\"\nmetric = \"endurance.rope_skip_1min\"",
        ],
        &[0, 0, 1, 7, 99],
    )
    .unwrap();
    assert_eq!(m.subject_ref, psn("00000107"));
    let id = "key = \"ID\"\nrole = \"subject\"\ncheck = \"cn_resident_id\"";
    let lower = run(KV, &[id], b"ID=11010519491231002x")
        .unwrap()
        .subject_ref;
    let upper = run(KV, &[id], b"ID=11010519491231002X")
        .unwrap()
        .subject_ref;
    assert_eq!(lower, upper);
}

/// A BCD field is read digit by digit: an id of 20 digits keeps every one
/// (an f64 would round it), and a field of 40,000 bytes, longer than any
/// number or format width, is an error or a value, never a panic.
#[test]
fn long_bcd_fields_neither_round_nor_panic() {
    let id = "offset = 0\ntype = \"bcd\"\nlength = 10\nrole = \"subject\"";
    let bytes = parse_hex("12 34 56 78 90 98 76 54 32 10").unwrap();
    let m = run("type = \"binary\"", &[id], &bytes).unwrap();
    assert_eq!(m.subject_ref, psn("12345678909876543210"));

    let huge = 40_000;
    let payload = vec![0x99; huge];
    let subject = format!("offset = 0\ntype = \"bcd\"\nlength = {huge}\nrole = \"subject\"");
    let err = run("type = \"binary\"", &[&subject], &payload).unwrap_err();
    assert!(err.to_string().contains("subject"), "{err}");
    let metric = format!("offset = 0\ntype = \"bcd\"\nlength = {huge}\nmetric = \"body.height\"");
    let m = run("type = \"binary\"", &[&metric], &payload);
    assert!(m.is_ok() || m.is_err(), "no panic");
    let far = "offset = 18446744073709551615\ntype = \"u16\"\nmetric = \"body.height\"";
    assert!(matches!(
        run("type = \"binary\"", &[far], &payload),
        Err(DecodeError::TooShort { .. })
    ));
}

#[test]
fn device_time_formats() {
    let f = "key = \"T\"\nrole = \"device_time\"\nformat = \"%Y%m%d%H%M%S\"";
    assert_eq!(
        run(KV, &[f], b"T=20261129083000")
            .unwrap()
            .device_time
            .as_deref(),
        Some("2026-11-29T08:30:00.000Z")
    );
    assert!(matches!(
        run(KV, &[f], b"T=yesterday").unwrap_err(),
        DecodeError::BadTime { .. }
    ));
    let unix = "key = \"T\"\nrole = \"device_time\"\nformat = \"unix\"";
    assert_eq!(
        run(KV, &[unix], b"T=0").unwrap().device_time.as_deref(),
        Some("1970-01-01T00:00:00.000Z")
    );
}
