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

    /// Takes one byte of the stream. Where the ETX stands is remembered,
    /// so each byte costs the same however long the frame grows.
    pub(super) fn push(&self, state: &mut State, b: u8, out: &mut Vec<Framed>) {
        let (stx, etx, max) = (self.stx, self.etx, self.max_bytes);
        if state.buf.is_empty() {
            // Hunting for STX: anything else is line noise between frames.
            if b == stx {
                state.buf.push(b);
                state.end_at = None;
            }
            return;
        }
        if state.end_at.is_none() && b == stx {
            let raw = std::mem::replace(&mut state.buf, vec![stx]);
            out.push(Framed::err(raw, FrameError::Truncated));
            return;
        }
        state.buf.push(b);
        if state.end_at.is_none() && b == etx {
            state.end_at = Some(state.buf.len() - 1);
        }
        let check_len = self.checksum.map_or(0, ChecksumKind::size);
        match state.end_at {
            Some(at) if state.buf.len() == at + 1 + check_len => {
                let raw = std::mem::take(&mut state.buf);
                state.end_at = None;
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
                state.end_at = None;
                out.push(Framed::err(raw, FrameError::TooLong { max }));
            }
            _ => {}
        }
    }
}
