//! Framing: turns a byte stream into frames, resynchronising after garbage.
//!
//! A [`Framer`] is fed whatever the transport read (any chunking) and yields
//! complete frames or framing errors, each with the raw bytes it covers (for
//! the log). It is pure and keeps at most `max_bytes` of partial frame.
//!
//! Each framing lives in its own file with its `[frame]` settings, its
//! step function, its `problems()` (checks at profile load) and its longest
//! frame: [`line`], [`stx_etx`], [`header`], [`fixed`], [`length_prefixed`],
//! [`csafe`], [`modbus_rtu`]; `message` (each message one frame) needs none.
//! [`FrameSpec`]'s methods dispatch to them with exhaustive matches, so a
//! new framing is one file plus one variant, and the compiler names every
//! match that must learn it.
//!
//! What each framing hands to the decoder (the *payload*):
//! - `line`: the text without its delimiter (and without a text checksum);
//! - `stx_etx`: the bytes between STX and ETX;
//! - `header`, `fixed`, `modbus_rtu`: the whole frame, so binary offsets
//!   count from its first byte;
//! - `length_prefixed`: the body after the length;
//! - `csafe`: the unstuffed content, without the checksum.

pub mod csafe;
pub mod fixed;
pub mod header;
pub mod length_prefixed;
pub mod line;
pub mod modbus_rtu;
pub mod stx_etx;

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::codec::checksum::{read_uint, ChecksumKind, Endian};
use crate::codec::parse_hex;
pub use csafe::CsafeSpec;
pub use fixed::FixedSpec;
pub use header::{HeaderSpec, LengthField};
pub use length_prefixed::LengthPrefixedSpec;
pub use line::{Delimiter, LineSpec, TextChecksum, TextPosition};
pub use stx_etx::StxEtxSpec;

/// How a profile delimits frames, as written in its `[frame]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrameSpec {
    /// ASCII lines, optionally grouped into a record ending in `end_token`.
    Line(LineSpec),
    /// `STX payload ETX [checksum]`.
    StxEtx(StxEtxSpec),
    /// `magic ... length ... [checksum] [tail]`: binary frames found by their
    /// header magic.
    Header(HeaderSpec),
    /// Frames of one fixed length, optionally starting with `sync` bytes.
    Fixed(FixedSpec),
    /// A big- or little-endian length, then that many bytes of body.
    LengthPrefixed(LengthPrefixedSpec),
    /// CSAFE standard frames (fitness equipment).
    Csafe(CsafeSpec),
    /// Modbus RTU responses.
    ModbusRtu,
    /// Each message is one frame: MQTT payloads (and, in tests and
    /// `fitedge decode`, the whole input).
    Message,
}

/// A problem with a `[frame]` table: (key, message, fix).
pub type SpecProblem = (&'static str, String, String);

impl FrameSpec {
    /// What is wrong with the settings, each with the key it concerns.
    pub fn problems(&self) -> Vec<SpecProblem> {
        match self {
            FrameSpec::Line(s) => s.problems(),
            FrameSpec::StxEtx(s) => s.problems(),
            FrameSpec::Header(s) => s.problems(),
            FrameSpec::Fixed(s) => s.problems(),
            FrameSpec::LengthPrefixed(s) => s.problems(),
            FrameSpec::Csafe(s) => s.problems(),
            FrameSpec::ModbusRtu => modbus_rtu::problems(),
            FrameSpec::Message => Vec::new(),
        }
    }

    /// The longest frame the framing can deliver, for checking field
    /// offsets; `None` when unbounded.
    pub fn max_frame_bytes(&self) -> Option<usize> {
        match self {
            FrameSpec::Line(s) => s.max_frame_bytes(),
            FrameSpec::StxEtx(s) => s.max_frame_bytes(),
            FrameSpec::Header(s) => s.max_frame_bytes(),
            FrameSpec::Fixed(s) => s.max_frame_bytes(),
            FrameSpec::LengthPrefixed(s) => s.max_frame_bytes(),
            FrameSpec::Csafe(s) => s.max_frame_bytes(),
            FrameSpec::ModbusRtu => Some(modbus_rtu::MAX_FRAME_BYTES),
            FrameSpec::Message => None,
        }
    }

    /// Whether frames are binary (text decoders do not apply).
    pub fn is_binary(&self) -> bool {
        match self {
            FrameSpec::Header(_)
            | FrameSpec::Fixed(_)
            | FrameSpec::ModbusRtu
            | FrameSpec::Csafe(_) => true,
            FrameSpec::Line(_)
            | FrameSpec::StxEtx(_)
            | FrameSpec::LengthPrefixed(_)
            | FrameSpec::Message => false,
        }
    }
}

fn default_max_bytes() -> usize {
    1024
}

fn hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    let bytes = parse_hex(&s).map_err(serde::de::Error::custom)?;
    if bytes.is_empty() {
        return Err(serde::de::Error::custom("needs at least one byte"));
    }
    Ok(bytes)
}

fn opt_hex_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    hex_bytes(d).map(Some)
}

/// A checksum at the end of a binary frame (before `tail` trailing bytes),
/// computed over the bytes from `from` up to the checksum.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BinaryChecksum {
    #[serde(rename = "type")]
    pub kind: ChecksumKind,
    #[serde(default)]
    pub from: usize,
    #[serde(default)]
    pub endian: Endian,
    #[serde(default)]
    pub tail: usize,
}

/// A framing failure.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum FrameError {
    #[error("checksum mismatch: frame says 0x{sent:02X}, computed 0x{computed:02X}; check baud/parity and the profile's checksum")]
    ChecksumMismatch { sent: u16, computed: u16 },
    #[error("checksum \"{text}\" is not hex")]
    ChecksumNotHex { text: String },
    #[error("checksum separator \"{separator}\" not found in the line")]
    ChecksumMissing { separator: String },
    #[error(
        "frame longer than {max} bytes without an end; check the profile's delimiter and max_bytes"
    )]
    TooLong { max: usize },
    #[error("length field says {length} bytes, more than max_bytes {max}; resynchronising")]
    BadLength { length: usize, max: usize },
    #[error("new frame start before the previous frame ended; partial frame dropped")]
    Truncated,
    #[error("CSAFE stuffing byte 0xF3 followed by 0x{0:02X}, expected 0x00..0x03")]
    BadStuffing(u8),
    #[error("our own request echoed back by the line (2-wire RS-485); skipped")]
    Echo,
}

/// A framing outcome with the raw bytes it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Framed {
    pub raw: Vec<u8>,
    pub result: Result<Vec<u8>, FrameError>,
}

impl Framed {
    fn ok(raw: Vec<u8>, payload: Vec<u8>) -> Framed {
        Framed {
            raw,
            result: Ok(payload),
        }
    }
    fn err(raw: Vec<u8>, error: FrameError) -> Framed {
        Framed {
            raw,
            result: Err(error),
        }
    }
}

/// Stateful splitter for one device's byte stream.
#[derive(Debug)]
pub struct Framer {
    spec: FrameSpec,
    state: State,
}

/// What a framer keeps between reads.
#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    /// Line framing: lines of a record not yet ended by `end_token`.
    record: Vec<u8>,
    /// Line framing: skipping input until the next delimiter.
    discarding: bool,
    /// Line framing: lines that are whole replies of their own ("measing").
    ignore: Vec<String>,
    /// STX/ETX framing: where the partial frame's ETX is, once seen.
    end_at: Option<usize>,
}

impl Framer {
    pub fn new(spec: &FrameSpec) -> Framer {
        Framer {
            spec: spec.clone(),
            state: State::default(),
        }
    }

    /// Lines equal to one of `ignore` are passed on as frames of their own
    /// instead of joining a record (see `end_token`).
    pub fn ignoring(mut self, ignore: &[String]) -> Framer {
        self.state.ignore = ignore.to_vec();
        self
    }

    /// Feeds bytes; returns every frame (or framing error) they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        let state = &mut self.state;
        match &self.spec {
            FrameSpec::Line(s) => bytes.iter().for_each(|&b| s.push(state, b, &mut out)),
            FrameSpec::StxEtx(s) => bytes.iter().for_each(|&b| s.push(state, b, &mut out)),
            FrameSpec::Header(s) => state.steps(bytes, |buf| s.step(buf), &mut out),
            FrameSpec::Fixed(s) => state.steps(bytes, |buf| s.step(buf), &mut out),
            FrameSpec::LengthPrefixed(s) => state.steps(bytes, |buf| s.step(buf), &mut out),
            FrameSpec::Csafe(s) => state.steps(bytes, |buf| s.step(buf), &mut out),
            FrameSpec::ModbusRtu => state.steps(bytes, modbus_rtu::step, &mut out),
            FrameSpec::Message => state.buf.extend_from_slice(bytes),
        }
        out
    }

    /// Ends the stream: a trailing line without its delimiter becomes a
    /// frame, as does a whole message; other partial frames are dropped.
    pub fn finish(&mut self) -> Vec<Framed> {
        let mut out = Vec::new();
        let state = &mut self.state;
        match &self.spec {
            FrameSpec::Line(s) => s.finish(state, &mut out),
            FrameSpec::Message if !state.buf.is_empty() => {
                let raw = std::mem::take(&mut state.buf);
                out.push(Framed::ok(raw.clone(), raw));
            }
            FrameSpec::Message
            | FrameSpec::StxEtx(_)
            | FrameSpec::Header(_)
            | FrameSpec::Fixed(_)
            | FrameSpec::LengthPrefixed(_)
            | FrameSpec::Csafe(_)
            | FrameSpec::ModbusRtu => {}
        }
        state.buf.clear();
        state.record.clear();
        state.discarding = false;
        state.end_at = None;
        out
    }
}

impl State {
    /// Buffers `bytes` and takes every frame a binary framing's step finds.
    /// The steps walk a cursor and the buffer is cut once at the end, so a
    /// long run of garbage (or a whole capture) costs time in its length,
    /// not its square.
    fn steps(&mut self, bytes: &[u8], step: impl Fn(&[u8]) -> Step, out: &mut Vec<Framed>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while start < self.buf.len() {
            let left = self.buf.len() - start;
            match step(&self.buf[start..]) {
                Step::NeedMore => break,
                Step::Skip(n) => start += n.clamp(1, left),
                Step::Frame { consumed, framed } => {
                    start += consumed.clamp(1, left);
                    out.push(framed);
                }
            }
        }
        self.buf.drain(..start);
    }
}

/// What a binary framing makes of the buffer's start.
enum Step {
    NeedMore,
    /// Garbage (or a false start): drop this many bytes and look again.
    Skip(usize),
    Frame {
        consumed: usize,
        framed: Framed,
    },
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Keeps the longest suffix of `buf` that could start `magic`, to skip garbage.
fn skip_to(buf: &[u8], magic: &[u8]) -> Step {
    match find(buf, magic) {
        // Callers look for `magic` at the start first.
        Some(0) => Step::NeedMore,
        Some(at) => Step::Skip(at),
        None => {
            let keep = (1..magic.len())
                .rev()
                .find(|k| buf.len() >= *k && buf.ends_with(&magic[..*k]))
                .unwrap_or(0);
            if buf.len() > keep {
                Step::Skip(buf.len() - keep)
            } else {
                Step::NeedMore
            }
        }
    }
}

/// A complete binary frame: verify its checksum. On a mismatch, skip only
/// `resync` bytes so a good frame inside the bad one's span is not lost.
fn checked_frame(frame: &[u8], checksum: Option<&BinaryChecksum>, resync: usize) -> Step {
    let raw = frame.to_vec();
    let Some(c) = checksum else {
        return Step::Frame {
            consumed: frame.len(),
            framed: Framed::ok(raw.clone(), raw),
        };
    };
    let at = frame.len() - c.tail - c.kind.size();
    match verify(
        c.kind,
        &frame[c.from.min(at)..at],
        &frame[at..at + c.kind.size()],
        c.endian,
    ) {
        Ok(()) => Step::Frame {
            consumed: frame.len(),
            framed: Framed::ok(raw.clone(), raw),
        },
        Err(e) => Step::Frame {
            consumed: resync.max(1),
            framed: Framed::err(raw, e),
        },
    }
}

fn verify(
    kind: ChecksumKind,
    covered: &[u8],
    sent: &[u8],
    endian: Endian,
) -> Result<(), FrameError> {
    let computed = kind.compute(covered);
    let sent = read_uint(sent, endian) as u16;
    if computed == sent {
        Ok(())
    } else {
        Err(FrameError::ChecksumMismatch { sent, computed })
    }
}

#[cfg(test)]
mod tests;
