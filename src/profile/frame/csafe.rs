//! `csafe` framing: CSAFE standard frames, `F1 content checksum F2`, bytes
//! F0..F3 inside stuffed as `F3 0n`, checksum = XOR of the unstuffed
//! content. The payload is the unstuffed content without the checksum.

use serde::Deserialize;

use super::{verify, FrameError, Framed, SpecProblem, Step};
use crate::codec::checksum::{ChecksumKind, Endian};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CsafeSpec {
    #[serde(default = "csafe_max")]
    pub max_bytes: usize,
}

fn csafe_max() -> usize {
    96
}

const CSAFE_START: u8 = 0xF1;
const CSAFE_STOP: u8 = 0xF2;
const CSAFE_STUFF: u8 = 0xF3;

impl CsafeSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        Vec::new()
    }

    pub fn max_frame_bytes(&self) -> Option<usize> {
        Some(self.max_bytes)
    }

    /// What the buffer's start holds.
    pub(super) fn step(&self, buf: &[u8]) -> Step {
        let max = self.max_bytes;
        if buf.first() != Some(&CSAFE_START) {
            return match buf.iter().position(|b| *b == CSAFE_START) {
                Some(at) => Step::Skip(at),
                None if buf.is_empty() => Step::NeedMore,
                None => Step::Skip(buf.len()),
            };
        }
        let Some(stop) = buf.iter().position(|b| *b == CSAFE_STOP) else {
            if let Some(next) = buf.iter().skip(1).position(|b| *b == CSAFE_START) {
                return Step::Frame {
                    consumed: next + 1,
                    framed: Framed::err(buf[..=next].to_vec(), FrameError::Truncated),
                };
            }
            if buf.len() > max {
                return Step::Frame {
                    consumed: buf.len(),
                    framed: Framed::err(buf.to_vec(), FrameError::TooLong { max }),
                };
            }
            return Step::NeedMore;
        };
        if let Some(next) = buf[1..stop].iter().position(|b| *b == CSAFE_START) {
            return Step::Frame {
                consumed: next + 1,
                framed: Framed::err(buf[..=next].to_vec(), FrameError::Truncated),
            };
        }
        let raw = buf[..=stop].to_vec();
        let mut content = Vec::with_capacity(stop);
        let mut i = 1;
        while i < stop {
            if buf[i] == CSAFE_STUFF {
                match buf.get(i + 1) {
                    Some(n @ 0..=3) if i + 1 < stop => content.push(0xF0 | n),
                    Some(n) => {
                        return Step::Frame {
                            consumed: stop + 1,
                            framed: Framed::err(raw, FrameError::BadStuffing(*n)),
                        }
                    }
                    None => return Step::NeedMore,
                }
                i += 2;
            } else {
                content.push(buf[i]);
                i += 1;
            }
        }
        let framed = match content.split_last() {
            None => Framed::err(raw, FrameError::Truncated),
            Some((&sent, body)) => match verify(ChecksumKind::Xor, body, &[sent], Endian::Big) {
                Ok(()) => Framed::ok(raw, body.to_vec()),
                Err(e) => Framed::err(raw, e),
            },
        };
        Step::Frame {
            consumed: stop + 1,
            framed,
        }
    }
}
