//! Device profiles: TOML files that say how to frame, decode and normalize a
//! device's bytes, with self-tests inside. Technicians add them without
//! recompiling. The technician's guide is `docs/device-profiles.md`.
//!
//! By concern, in pipeline order:
//! - [`spec`]: the schema a profile file deserializes into;
//! - [`validate`]: loading, every problem with its line and a fix, and
//!   finding profiles by id;
//! - [`frame`]: bytes -> frames, one file per framing;
//! - [`decode`]: frame -> measurement (numbers normalized by
//!   [`crate::normalize`]);
//! - [`device`]: [`DeviceDecoder`], a profile run over one device's bytes;
//! - [`selftest`]: the profile's own `[[test]]` cases.

pub mod decode;
pub mod device;
pub mod frame;
pub mod selftest;
pub mod spec;
pub mod validate;

pub use decode::{DecodeContext, DecodeError};
pub use device::{decode_gatt, DeviceDecoder, FrameFailure};
pub use frame::{FrameError, FrameSpec, Framer};
pub use selftest::TestOutcome;
pub use spec::{
    DecodeSpec, Expect, FieldSpec, Match, ModbusRequest, Profile, RequestSpec, Role, TestCase,
};
pub use validate::{collect_paths, find, parse_usb};

#[cfg(test)]
mod tests;
