//! fitedge: an edge gateway for physique-monitoring stations.
//!
//! Readings flow through one pipeline:
//!
//! ```text
//! source (serial) -> profile (frame, decode, normalize) -> outbox (sled) -> uplink (MQTT)
//! ```
//!
//! - [`config`]: the config file, parsed and validated with line numbers.
//! - [`source`]: device I/O; one task per device.
//! - [`profile`]: the declarative device profiles (TOML) and their decoders.
//! - [`codec`]: byte-level reads, checksums and hex shared by every decoder.
//! - [`record`]: the record, the type every later stage shares.
//! - [`outbox`]: the durable ring of records awaiting PUBACK.
//! - [`uplink`]: the MQTT forwarder to the platform.
//! - [`gateway`]: wires the stages together and runs them.
//! - [`normalize`]: the one place a device's number becomes a reading.
//! - [`vocabulary`], [`units`]: canonical metrics and unit conversion.
//! - [`status`], [`report`]: counters, the heartbeat and the localhost
//!   status endpoint; [`clock`], [`problem`]: time, user-facing errors.
//! - [`sim`], [`broker`]: simulated instruments and an embedded broker for
//!   the demo and the tests.

pub mod backoff;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod gateway;
pub mod gatt;
pub mod normalize;
pub mod outbox;
pub mod problem;
pub mod profile;
pub mod record;
pub mod report;
pub mod sim;
pub mod source;
pub mod status;
pub mod units;
pub mod usb;
pub mod uplink;
pub mod vocabulary;
pub mod watchdog;
pub mod writer;

#[cfg(feature = "embedded-broker")]
pub mod broker;
