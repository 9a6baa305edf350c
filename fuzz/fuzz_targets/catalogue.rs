//! The catalogue's profiles, loaded once, and any bytes put through one the
//! way its transport would: a serial stream (framer, then decoder), a LAN
//! MQTT message, or GATT notifications. Shared by the fuzz targets and the
//! property tests in `tests/hostile_input.rs`, so both hold the same
//! invariants.

use std::path::PathBuf;
use std::sync::OnceLock;

use fitedge::gatt;
use fitedge::profile::{decode_gatt, DecodeContext, DecodeSpec, DeviceDecoder, FrameSpec, Profile};

pub fn profiles() -> &'static [Profile] {
    static PROFILES: OnceLock<Vec<Profile>> = OnceLock::new();
    PROFILES.get_or_init(|| {
        // From the repository (tests) or from fuzz/ (the fuzz crate).
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = [
            manifest.join("device-profiles"),
            manifest.join("../device-profiles"),
        ]
        .into_iter()
        .find(|d| d.is_dir())
        .expect("the catalogue directory");
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("the catalogue")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| Profile::load(p).expect("catalogue profiles load"))
            .collect()
    })
}

/// `data` through `profile`; `split` cuts a stream into two reads.
pub fn exercise(profile: &Profile, split: usize, data: &[u8]) {
    let ctx = DecodeContext::for_tests();
    let results = if let DecodeSpec::Gatt(spec) = &profile.decode {
        let named: Vec<u16> = (spec.characteristics.iter())
            .filter_map(|c| gatt::parse_uuid16(c))
            .collect();
        let uuid = match named.as_slice() {
            [] => gatt::CODECS[split % gatt::CODECS.len()].uuid,
            some => some[split % some.len()],
        };
        let values: Vec<Vec<u8>> = data.chunks(1 + split % 24).map(<[u8]>::to_vec).collect();
        decode_gatt(spec, uuid, &values)
    } else if profile.frame == FrameSpec::Message {
        vec![DeviceDecoder::new(profile, ctx).decode_message(data)]
    } else {
        let mut decoder = DeviceDecoder::new(profile, ctx);
        let (first, second) = data.split_at(split.min(data.len()));
        let mut out = decoder.feed(first);
        out.extend(decoder.feed(second));
        out.extend(decoder.finish());
        out
    };
    for measurement in results.into_iter().flatten() {
        for reading in &measurement.values {
            assert!(reading.value.is_finite(), "{}: {reading:?}", profile.id);
        }
    }
}
