//! `fixed` framing: frames of one fixed length, optionally starting with
//! `sync` bytes and ending in a checksum. The payload is the whole frame.

use serde::Deserialize;

use super::{checked_frame, opt_hex_bytes, skip_to, BinaryChecksum, SpecProblem, Step};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FixedSpec {
    pub length: usize,
    #[serde(default, deserialize_with = "opt_hex_bytes")]
    pub sync: Option<Vec<u8>>,
    #[serde(default)]
    pub checksum: Option<BinaryChecksum>,
}

impl FixedSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        let length = self.length;
        let need = self.sync.as_ref().map_or(0, Vec::len)
            + self.checksum.as_ref().map_or(0, |c| c.kind.size() + c.tail);
        if length == 0 || length < need {
            return vec![(
                "length",
                format!("fixed length {length} cannot hold the sync and checksum ({need} bytes)"),
                "set length to the whole frame's size".into(),
            )];
        }
        Vec::new()
    }

    pub fn max_frame_bytes(&self) -> Option<usize> {
        Some(self.length)
    }

    /// What the buffer's start holds.
    pub(super) fn step(&self, buf: &[u8]) -> Step {
        let sync = self.sync.as_deref();
        if let Some(sync) = sync {
            if !buf.starts_with(sync) {
                if buf.len() < sync.len() && sync.starts_with(buf) {
                    return Step::NeedMore;
                }
                return skip_to(buf, sync);
            }
        }
        if buf.len() < self.length {
            return Step::NeedMore;
        }
        // Without a sync pattern, realign one byte at a time after a bad frame.
        checked_frame(
            &buf[..self.length],
            self.checksum.as_ref(),
            sync.map_or(1, <[u8]>::len),
        )
    }
}
