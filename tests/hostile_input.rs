//! Hostile bytes on stable Rust, the same invariants the fuzz targets in
//! `fuzz/` hold (they share `catalogue.rs`): any bytes through any catalogue
//! profile and any GATT codec, mangled profile and config files, and
//! mangled stored slots give results or errors, never a panic or a
//! non-finite value. Inputs the fuzzers once crashed on stay here as
//! regression cases.

#[path = "../fuzz/fuzz_targets/catalogue.rs"]
mod catalogue;

use std::path::Path;

use fitedge::gatt::{self, Assembler, Options};
use fitedge::profile::Profile;
use proptest::prelude::*;

/// `text` with `edits` applied: each replaces a character span with junk.
fn mangle(text: &str, edits: &[(usize, usize, String)]) -> String {
    let mut out: Vec<char> = text.chars().collect();
    for (at, len, junk) in edits {
        let at = at % (out.len() + 1);
        let end = (at + len).min(out.len());
        out.splice(at..end, junk.chars());
    }
    out.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(usize, usize, String)>> {
    prop::collection::vec(
        (
            any::<usize>(),
            0usize..8,
            "[\\[\\]={}\",.#0-9a-z\\n \\\\-]{0,8}",
        ),
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_through_any_profile(pick in any::<usize>(), split in 0usize..1024, data in prop::collection::vec(any::<u8>(), 0..512)) {
        let profiles = catalogue::profiles();
        catalogue::exercise(&profiles[pick % profiles.len()], split, &data);
    }

    #[test]
    fn a_profiles_own_frames_cut_and_mangled(pick in any::<usize>(), case in any::<usize>(), split in 0usize..256, flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4)) {
        let profiles = catalogue::profiles();
        let profile = &profiles[pick % profiles.len()];
        if profile.tests.is_empty() {
            return Ok(());
        }
        let mut input = profile.tests[case % profile.tests.len()].input.clone();
        for (at, byte) in flips {
            if !input.is_empty() {
                let at = at % input.len();
                input[at] ^= byte;
            }
        }
        catalogue::exercise(profile, split, &input);
    }

    #[test]
    fn any_value_into_any_gatt_codec(pick in any::<usize>(), value in prop::collection::vec(any::<u8>(), 0..64)) {
        let codec = &gatt::CODECS[pick % gatt::CODECS.len()];
        if let Ok(decoded) = gatt::decode(codec.uuid, &value, &Options::default()) {
            for v in &decoded.values {
                prop_assert!(v.value.is_finite(), "{:04X}: {v:?}", codec.uuid);
            }
        }
        let mut assembler = Assembler::new(Options::default());
        for part in value.chunks(1 + pick % 20) {
            let _ = assembler.push(codec.uuid, part);
        }
    }

    #[test]
    fn mangled_profile_files_give_problems_not_panics(pick in any::<usize>(), edits in edits()) {
        let profiles = catalogue::profiles();
        let text = std::fs::read_to_string(&profiles[pick % profiles.len()].path).unwrap();
        let _ = Profile::parse(Path::new("mangled.toml"), &mangle(&text, &edits));
    }

    #[test]
    fn mangled_config_files_give_problems_not_panics(edits in edits()) {
        let text = include_str!("../systemd/fitedge.toml");
        let _ = fitedge::config::parse(Path::new("/nonexistent/fitedge.toml"), &mangle(text, &edits));
    }

    #[test]
    fn mangled_slots_give_errors_not_panics(seq in 0u64..2048, cut in any::<usize>(), flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6)) {
        let mut slot = stored_slot(seq);
        for (at, byte) in flips {
            let at = at % slot.len();
            slot[at] ^= byte;
        }
        slot.truncate(cut % (slot.len() + 1));
        if let Ok(stored) = fitedge::outbox::decode_slot_bytes(seq, &slot) {
            prop_assert_eq!(stored.seq, seq);
        }
    }
}

/// A well-formed slot for record `seq`, in the stored layout
/// (`seq | boot id | uptime ms | device id length | device id | JSON`).
fn stored_slot(seq: u64) -> Vec<u8> {
    use fitedge::record::{Measurement, Origin, Record, Transport};
    let origin = Origin {
        gateway_id: "gw".into(),
        site_id: "site".into(),
        device_id: "hw-1".into(),
        profile_id: "height-weight-kv-line".into(),
        transport: Transport::Serial,
    };
    let mut record = Record::new(&origin, Measurement::default());
    record.seq = seq;
    let mut slot = seq.to_be_bytes().to_vec();
    slot.extend_from_slice(&[7; 16]);
    slot.extend_from_slice(&1000u64.to_be_bytes());
    slot.push(4);
    slot.extend_from_slice(b"hw-1");
    slot.extend_from_slice(&serde_json::to_vec(&record).unwrap());
    assert!(fitedge::outbox::decode_slot_bytes(seq, &slot).is_ok());
    slot
}
