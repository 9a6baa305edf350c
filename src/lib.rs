//! fitedge: an edge gateway for physique-monitoring stations.
//!
//! Readings flow through one pipeline, each stage a module; `cli` and
//! `gateway` wire the stages, and no stage imports either of them:
//!
//! ```text
//! source -> profile / gatt (frame, decode) -> normalize -> writer -> outbox -> uplink
//! ```
//!
//! - [`config`]: the config file, read section by section and checked in
//!   stages (sections, the files it names, each device's profile).
//! - [`gateway`]: [`gateway::run`] builds the stages, waits for shutdown,
//!   drains them in order.
//! - [`source`]: device I/O (serial, LAN MQTT, Bluetooth LE); every source
//!   hands over through `DeviceContext::emit` and `reject`.
//! - [`profile`]: declarative device profiles (TOML) and their decoders;
//!   [`gatt`]: built-in codecs for standard BLE characteristics;
//!   [`codec`]: the byte-level reads both use.
//! - [`normalize`]: the one place a device's number becomes a reading.
//! - [`writer`]: makes records durable in the [`outbox`], the sled ring.
//! - [`uplink`]: forwards the outbox to the platform: a pure session
//!   ([`uplink::state`]), payload encoders ([`uplink::payload`]), rumqttc I/O.
//! - [`record`]: the types that flow between the stages; [`contract`]: the
//!   payload schemas and a subscriber's checks (`fitedge tail`).
//! - [`watchdog`], [`status`], [`report`]: systemd's watchdog, counters,
//!   the heartbeat and the localhost status endpoint.
//! - [`vocabulary`], [`units`]: canonical metrics and unit conversion;
//!   [`clock`], [`backoff`], [`listen`], [`usb`], [`problem`]: time,
//!   retries, listeners that survive running out of descriptors, USB port
//!   lookup, user-facing errors.
//! - [`sim`], [`broker`]: simulated instruments and an embedded broker for
//!   the demo, the LAN side and the tests.

pub mod backoff;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod config;
pub mod contract;
pub mod gateway;
pub mod gatt;
pub mod identity;
pub mod listen;
pub mod normalize;
pub mod outbox;
pub mod problem;
pub mod profile;
pub mod record;
pub mod report;
pub mod secret;
pub mod sim;
pub mod source;
pub mod station;
pub mod status;
pub mod tls;
pub mod units;
pub mod uplink;
pub mod usb;
pub mod vocabulary;
pub mod watchdog;
pub mod writer;

#[cfg(feature = "embedded-broker")]
pub mod broker;
