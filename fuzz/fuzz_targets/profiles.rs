//! Any bytes into any catalogue profile (its framer and decoder): results
//! or errors, never a panic, a hang or a non-finite value.
#![no_main]

#[path = "catalogue.rs"]
mod catalogue;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [pick, split, rest @ ..] = data else {
        return;
    };
    let profiles = catalogue::profiles();
    let profile = &profiles[*pick as usize % profiles.len()];
    catalogue::exercise(profile, *split as usize * 4, rest);
});
