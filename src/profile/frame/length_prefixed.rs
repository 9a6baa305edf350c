//! `length_prefixed` framing: a big- or little-endian length, then that
//! many bytes of body. The payload is the body after the length.

use serde::Deserialize;

use super::{default_max_bytes, FrameError, Framed, SpecProblem, Step};
use crate::codec::checksum::{read_uint, Endian};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LengthPrefixedSpec {
    #[serde(default = "two")]
    pub size: usize,
    #[serde(default)]
    pub endian: Endian,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn two() -> usize {
    2
}

impl LengthPrefixedSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        if matches!(self.size, 1 | 2 | 4) {
            return Vec::new();
        }
        vec![(
            "size",
            format!("length prefix size {} is not 1, 2 or 4", self.size),
            "most devices use 2 (u16)".into(),
        )]
    }

    pub fn max_frame_bytes(&self) -> Option<usize> {
        Some(self.max_bytes)
    }

    /// What the buffer's start holds.
    pub(super) fn step(&self, buf: &[u8]) -> Step {
        let (size, max) = (self.size, self.max_bytes);
        if buf.len() < size {
            return Step::NeedMore;
        }
        let length = read_uint(&buf[..size], self.endian) as usize;
        if length == 0 || length > max {
            return Step::Frame {
                consumed: 1,
                framed: Framed::err(buf[..size].to_vec(), FrameError::BadLength { length, max }),
            };
        }
        if buf.len() < size + length {
            return Step::NeedMore;
        }
        Step::Frame {
            consumed: size + length,
            framed: Framed::ok(
                buf[..size + length].to_vec(),
                buf[size..size + length].to_vec(),
            ),
        }
    }
}
