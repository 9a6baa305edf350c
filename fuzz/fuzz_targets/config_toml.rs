//! Any text as the config file: a config or problems, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = fitedge::config::parse(std::path::Path::new("/nonexistent/fitedge.toml"), text);
    }
});
