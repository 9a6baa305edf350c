//! Fixtures shared by the integration tests, by what they provide:
//! `platform` (embedded broker, platform subscriber), `brokers` (mosquitto,
//! a broker that never acknowledges), `daemon` (the real binary as a child,
//! a notify socket), `lan` (a band hub's config, a LAN MQTT device), `station` (a simulated instrument on a pseudo-terminal)
//! and `config` (config files, buffers).
#![allow(dead_code, unused_imports)]

mod brokers;
mod config;
mod daemon;
mod lan;
mod platform;
mod station;
mod tls;

pub use brokers::*;
pub use config::*;
pub use daemon::*;
pub use lan::*;
pub use platform::*;
pub use station::*;
pub use tls::*;

pub const GATEWAY: &str = "gw-test";
pub const SITE: &str = "site-test";

/// Prints a line of the fault suites' summary, and appends it to the file
/// named by `FITEDGE_FAULT_SUMMARY` (CI prints that file at the end).
#[allow(unused_macros)]
macro_rules! summary {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        if let Some(path) = std::env::var_os("FITEDGE_FAULT_SUMMARY") {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(f, "{line}");
            }
        }
    }};
}
