//! Any text as a profile file: a profile or problems, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fitedge::profile::Profile::parse(std::path::Path::new("fuzz.toml"), text);
    }
});
