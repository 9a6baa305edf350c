//! `header` framing: binary frames found by their header magic, with a
//! length field: `magic ... length ... [checksum] [tail]`, total length =
//! length field + `overhead`. The payload is the whole frame.

use serde::Deserialize;

use super::{
    checked_frame, default_max_bytes, hex_bytes, skip_to, BinaryChecksum, FrameError, Framed,
    SpecProblem, Step,
};
use crate::codec::checksum::{read_uint, Endian};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderSpec {
    #[serde(deserialize_with = "hex_bytes")]
    pub magic: Vec<u8>,
    pub length: LengthField,
    #[serde(default)]
    pub checksum: Option<BinaryChecksum>,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

/// Where a header frame's length field is and what it counts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LengthField {
    /// Offset of the length field from the first magic byte.
    pub offset: usize,
    /// 1 or 2 bytes.
    #[serde(default = "one_byte")]
    pub size: usize,
    #[serde(default)]
    pub endian: Endian,
    /// Bytes of the frame the length does not count (magic, the length
    /// itself, checksum, tail...): total = length + overhead.
    pub overhead: usize,
}

fn one_byte() -> usize {
    1
}

impl HeaderSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        let (length, magic) = (&self.length, &self.magic);
        let mut out: Vec<SpecProblem> = Vec::new();
        if !(1..=2).contains(&length.size) {
            out.push((
                "length",
                format!("length size {} is not 1 or 2", length.size),
                "length fields are u8 or u16".into(),
            ));
        }
        if length.offset < magic.len() {
            out.push((
                "length",
                format!(
                    "length offset {} lies inside the {}-byte magic",
                    length.offset,
                    magic.len()
                ),
                "count the offset from the first magic byte".into(),
            ));
        }
        if let Some(c) = &self.checksum {
            if c.from >= self.max_bytes {
                out.push((
                    "checksum",
                    format!(
                        "checksum starts at {} past max_bytes {}",
                        c.from, self.max_bytes
                    ),
                    "`from` is a byte offset from the frame start".into(),
                ));
            }
        }
        out
    }

    pub fn max_frame_bytes(&self) -> Option<usize> {
        Some(self.max_bytes)
    }

    /// What the buffer's start holds.
    pub(super) fn step(&self, buf: &[u8]) -> Step {
        let (magic, length, max) = (&self.magic[..], &self.length, self.max_bytes);
        let checksum = self.checksum.as_ref();
        if !buf.starts_with(magic) {
            if buf.len() < magic.len() && magic.starts_with(buf) {
                return Step::NeedMore;
            }
            return skip_to(buf, magic);
        }
        let end = length.offset + length.size;
        if buf.len() < end {
            return Step::NeedMore;
        }
        let total = read_uint(&buf[length.offset..end], length.endian) as usize + length.overhead;
        if total > max || total < end + checksum.map_or(0, |c| c.kind.size() + c.tail) {
            return Step::Frame {
                consumed: magic.len(),
                framed: Framed::err(
                    buf[..end].to_vec(),
                    FrameError::BadLength { length: total, max },
                ),
            };
        }
        if buf.len() < total {
            return Step::NeedMore;
        }
        checked_frame(&buf[..total], checksum, magic.len())
    }
}
