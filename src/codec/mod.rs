//! Byte-level codecs every decoder shares: integer, BCD, IEEE-754 and
//! IEEE-11073 SFLOAT/FLOAT reads ([`binary`]), frame checksums
//! ([`checksum`]) and hex text ([`hex`]).
//!
//! A leaf: nothing here depends on the rest of the crate, so the profile
//! decoders and the GATT codecs can both use it without using each other.

pub mod binary;
pub mod checksum;
pub mod hex;

pub use hex::{hex, parse_hex};
