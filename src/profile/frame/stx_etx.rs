//! `stx_etx` framing: `STX payload ETX [checksum]`, the checksum over the
//! bytes after STX up to and including ETX. The payload is the bytes
//! between STX and ETX.

use serde::{Deserialize, Deserializer};

use super::{default_max_bytes, verify, FrameError, Framed, SpecProblem, State};
use crate::codec::checksum::{ChecksumKind, Endian};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StxEtxSpec {
    #[serde(default = "stx", deserialize_with = "byte")]
    pub stx: u8,
    #[serde(default = "etx", deserialize_with = "byte")]
    pub etx: u8,
    #[serde(default)]
    pub checksum: Option<ChecksumKind>,
    #[serde(default)]
    pub checksum_endian: Endian,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
}

fn stx() -> u8 {
    0x02
}
fn etx() -> u8 {
    0x03
}

fn byte<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    u8::deserialize(d)
}

impl StxEtxSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        Vec::new()
    }

    pub fn max_frame_bytes(&self) -> Option<usize> {
        Some(self.max_bytes)
    }

    /// Takes one byte of the stream.
    pub(super) fn push(&self, state: &mut State, b: u8, out: &mut Vec<Framed>) {
        let (stx, etx, max) = (self.stx, self.etx, self.max_bytes);
        if state.buf.is_empty() {
            // Hunting for STX: anything else is line noise between frames.
            if b == stx {
                state.buf.push(b);
            }
            return;
        }
        let check_len = self.checksum.map_or(0, ChecksumKind::size);
        let etx_at = state
            .buf
            .iter()
            .skip(1)
            .position(|x| *x == etx)
            .map(|p| p + 1);
        if etx_at.is_none() && b == stx {
            let raw = std::mem::replace(&mut state.buf, vec![stx]);
            out.push(Framed::err(raw, FrameError::Truncated));
            return;
        }
        state.buf.push(b);
        let etx_at = etx_at.or_else(|| (b == etx).then_some(state.buf.len() - 1));
        match etx_at {
            Some(at) if state.buf.len() == at + 1 + check_len => {
                let raw = std::mem::take(&mut state.buf);
                let payload = raw[1..at].to_vec();
                let result = match self.checksum {
                    None => Ok(payload),
                    Some(kind) => verify(kind, &raw[1..=at], &raw[at + 1..], self.checksum_endian)
                        .map(|_| payload),
                };
                out.push(Framed { raw, result });
            }
            _ if state.buf.len() > max => {
                let raw = std::mem::take(&mut state.buf);
                out.push(Framed::err(raw, FrameError::TooLong { max }));
            }
            _ => {}
        }
    }
}
