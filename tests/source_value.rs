//! `source_value` and `source_unit` mean the same for every decoder
//! (docs/mqtt-api.md): the number the device sent, before the decoder's
//! scale and unit conversion, present exactly when the value differs from
//! it; the device's unit, present exactly when it is not the canonical one.

use std::path::Path;

use fitedge::codec::parse_hex;
use fitedge::gatt::{self, Options, Override};
use fitedge::profile::{self, DecodeContext, DecodeSpec, Profile};
use fitedge::record::Reading;

const SERIAL: &str = r#"
id = "scale-lb-line"
name = "a scale sending tenths of a pound"
[frame]
type = "line"
[decode]
type = "key_value"
[[field]]
key = "W"
metric = "body.weight"
unit = "lb"
scale = 0.1
[[field]]
key = "H"
metric = "body.height"
scale = 0.1
[[field]]
key = "T"
metric = "vital.body_temperature"
[[test]]
text = "W=1442;H=1725;T=36.6\r\n"
values = { "body.weight" = 65.40802, "body.height" = 172.5, "vital.body_temperature" = 36.6 }
"#;

fn serial_readings() -> Vec<Reading> {
    let p = Profile::parse(Path::new("scale-lb-line.toml"), SERIAL).expect("profile");
    let out = p.decode_all(b"W=1442;H=1725;T=36.6\r\n", &DecodeContext::default());
    let [Ok(m)] = out.as_slice() else {
        panic!("one measurement: {out:?}")
    };
    m.values.clone()
}

fn gatt_reading(uuid: u16, hex: &str, overrides: &[Override]) -> Reading {
    let m = gatt::decode(uuid, &parse_hex(hex).unwrap(), &Options::default())
        .and_then(|d| d.normalize(uuid, uuid, overrides))
        .expect("decodes");
    m.values[0].clone()
}

fn source(r: &Reading) -> (f64, Option<f64>, Option<&str>) {
    (r.value, r.source_value, r.source_unit.as_deref())
}

#[test]
fn a_serial_profile_keeps_the_number_before_scale_and_conversion() {
    let r = serial_readings();
    assert_eq!(source(&r[0]), (65.40802, Some(1442.0), Some("lb")));
    assert_eq!(source(&r[1]), (172.5, Some(1725.0), None));
    assert_eq!(source(&r[2]), (36.6, None, None));
}

#[test]
fn a_gatt_codec_keeps_its_number_at_the_characteristic_resolution() {
    // Weight Measurement, imperial: 14420 x 0.01 lb.
    assert_eq!(
        source(&gatt_reading(0x2A9D, "01 54 38", &[])),
        (65.40802, Some(144.2), Some("[lb_av]"))
    );
    // SI: 13080 x 0.005 kg, nothing changed.
    assert_eq!(
        source(&gatt_reading(0x2A9D, "00 18 33", &[])),
        (65.4, None, None)
    );
}

#[test]
fn a_gatt_override_scale_keeps_the_codec_number_like_a_profile_scale() {
    let tenth = Override {
        characteristic: None,
        field: "weight".into(),
        scale: Some(0.1),
        metric: None,
        drop: false,
    };
    assert_eq!(
        source(&gatt_reading(
            0x2A9D,
            "00 18 33",
            std::slice::from_ref(&tenth)
        )),
        (6.54, Some(65.4), None)
    );
    assert_eq!(
        source(&gatt_reading(0x2A9D, "01 54 38", &[tenth])),
        (6.540802, Some(144.2), Some("[lb_av]"))
    );
}

const GATT: &str = r#"
id = "scale-tenths-ble"
name = "a scale whose firmware sends weight in tenths of the specified unit"
[decode]
type = "gatt"
characteristics = ["2A9D"]
[[decode.override]]
field = "weight"
scale = 0.1
[[test]]
characteristic = "2A9D"
hex = "01 54 38"
values = { "body.weight" = 6.540802 }
"#;

#[test]
fn a_gatt_profile_override_follows_the_same_rule() {
    let p = Profile::parse(Path::new("scale-tenths-ble.toml"), GATT).expect("profile");
    assert!(p.run_tests().iter().all(|t| t.failure.is_none()));
    let DecodeSpec::Gatt(spec) = &p.decode else {
        panic!("a gatt profile")
    };
    let out = profile::decode_gatt(spec, 0x2A9D, &[parse_hex("01 54 38").unwrap()]);
    let [Ok(m)] = out.as_slice() else {
        panic!("one measurement: {out:?}")
    };
    assert_eq!(
        source(&m.values[0]),
        (6.540802, Some(144.2), Some("[lb_av]"))
    );
}
