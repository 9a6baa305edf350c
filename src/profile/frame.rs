//! Framing: turns a byte stream into frames, resynchronising after garbage.
//!
//! A [`Framer`] is fed whatever the transport read (any chunking) and yields
//! complete frames or framing errors, each with the raw bytes it covers (for
//! the log). It is pure and keeps at most `max_bytes` of partial frame.
//!
//! What each framing hands to the decoder (the *payload*):
//! - `line`: the text without its delimiter (and without a text checksum);
//! - `stx_etx`: the bytes between STX and ETX;
//! - `header`, `fixed`, `modbus_rtu`: the whole frame, so binary offsets
//!   count from its first byte;
//! - `length_prefixed`: the body after the length;
//! - `csafe`: the unstuffed content, without the checksum.

use serde::{Deserialize, Deserializer};
use thiserror::Error;

use crate::codec::checksum::{read_uint, ChecksumKind, Endian};
use crate::codec::parse_hex;

/// How a profile delimits frames, as written in its `[frame]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrameSpec {
    /// ASCII lines, optionally grouped into a record ending in `end_token`.
    Line {
        #[serde(default)]
        delimiter: Delimiter,
        /// A record is complete when a line ends with this (e.g. `over`).
        #[serde(default)]
        end_token: Option<String>,
        #[serde(default)]
        checksum: Option<TextChecksum>,
        #[serde(default = "default_max_bytes")]
        max_bytes: usize,
    },
    /// `STX payload ETX [checksum]`, the checksum over the bytes after STX
    /// up to and including ETX.
    StxEtx {
        #[serde(default = "stx", deserialize_with = "byte")]
        stx: u8,
        #[serde(default = "etx", deserialize_with = "byte")]
        etx: u8,
        #[serde(default)]
        checksum: Option<ChecksumKind>,
        #[serde(default)]
        checksum_endian: Endian,
        #[serde(default = "default_max_bytes")]
        max_bytes: usize,
    },
    /// `magic ... length ... [checksum] [tail]`: binary frames found by their
    /// header magic; total length = length field + `overhead`.
    Header {
        #[serde(deserialize_with = "hex_bytes")]
        magic: Vec<u8>,
        length: LengthField,
        #[serde(default)]
        checksum: Option<BinaryChecksum>,
        #[serde(default = "default_max_bytes")]
        max_bytes: usize,
    },
    /// Frames of one fixed length, optionally starting with `sync` bytes.
    Fixed {
        length: usize,
        #[serde(default, deserialize_with = "opt_hex_bytes")]
        sync: Option<Vec<u8>>,
        #[serde(default)]
        checksum: Option<BinaryChecksum>,
    },
    /// A big- or little-endian length, then that many bytes of body.
    LengthPrefixed {
        #[serde(default = "two")]
        size: usize,
        #[serde(default)]
        endian: Endian,
        #[serde(default = "default_max_bytes")]
        max_bytes: usize,
    },
    /// CSAFE standard frames: `F1 content checksum F2`, bytes F0..F3 inside
    /// stuffed as `F3 0n`, checksum = XOR of the unstuffed content.
    Csafe {
        #[serde(default = "csafe_max")]
        max_bytes: usize,
    },
    /// Modbus RTU responses (FC 01-04 with a byte count, 05/06/15/16 echoes,
    /// exceptions), CRC-16/MODBUS sent low byte first.
    ModbusRtu,
    /// Each message is one frame: MQTT payloads (and, in tests and
    /// `fitedge decode`, the whole input).
    Message,
}

fn default_max_bytes() -> usize {
    1024
}
fn csafe_max() -> usize {
    96
}
fn two() -> usize {
    2
}
fn stx() -> u8 {
    0x02
}
fn etx() -> u8 {
    0x03
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

/// A checksum written as hex text before or after the line, set off by a
/// separator (NMEA-style `...*47`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TextChecksum {
    #[serde(rename = "type")]
    pub kind: ChecksumKind,
    #[serde(default)]
    pub position: TextPosition,
    pub separator: String,
    /// Leading bytes of the text not covered (e.g. 1 for NMEA's `$`).
    #[serde(default)]
    pub skip: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum TextPosition {
    Prefix,
    #[default]
    Suffix,
}

/// A line delimiter: `crlf`, `lf`, `cr`, `any` or any other literal text.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Delimiter {
    /// LF, with a CR before it stripped.
    Lf,
    /// CR alone.
    Cr,
    /// CR LF (a bare LF also ends the line).
    Crlf,
    /// Any of CR, LF or CR LF; empty lines are skipped.
    #[default]
    Any,
    /// A literal byte sequence.
    Literal(Vec<u8>),
}

impl<'de> Deserialize<'de> for Delimiter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "lf" => Delimiter::Lf,
            "cr" => Delimiter::Cr,
            "crlf" => Delimiter::Crlf,
            "any" => Delimiter::Any,
            "" => {
                return Err(serde::de::Error::custom(
                    "delimiter is empty; use crlf, lf, cr, any or a literal",
                ))
            }
            other => Delimiter::Literal(other.as_bytes().to_vec()),
        })
    }
}

fn byte<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    u8::deserialize(d)
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
    buf: Vec<u8>,
    /// Line framing: lines of a record not yet ended by `end_token`.
    record: Vec<u8>,
    /// Line framing: skipping input until the next delimiter.
    discarding: bool,
    /// Line framing: lines that are whole replies of their own ("measing").
    ignore: Vec<String>,
}

impl Framer {
    pub fn new(spec: &FrameSpec) -> Framer {
        Framer {
            spec: spec.clone(),
            buf: Vec::new(),
            record: Vec::new(),
            discarding: false,
            ignore: Vec::new(),
        }
    }

    /// Lines equal to one of `ignore` are passed on as frames of their own
    /// instead of joining a record (see `end_token`).
    pub fn ignoring(mut self, ignore: &[String]) -> Framer {
        self.ignore = ignore.to_vec();
        self
    }

    /// Feeds bytes; returns every frame (or framing error) they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        match self.spec.clone() {
            FrameSpec::Line {
                delimiter,
                end_token,
                checksum,
                max_bytes,
            } => {
                for &b in bytes {
                    self.push_line(
                        b,
                        &delimiter,
                        end_token.as_deref(),
                        checksum.as_ref(),
                        max_bytes,
                        &mut out,
                    );
                }
            }
            FrameSpec::StxEtx {
                stx,
                etx,
                checksum,
                checksum_endian,
                max_bytes,
            } => {
                for &b in bytes {
                    self.push_stx(b, stx, etx, checksum, checksum_endian, max_bytes, &mut out);
                }
            }
            spec => {
                self.buf.extend_from_slice(bytes);
                while let Some(framed) = self.next_binary(&spec) {
                    out.push(framed);
                }
            }
        }
        out
    }

    /// Ends the stream: a trailing line without its delimiter becomes a frame.
    pub fn finish(&mut self) -> Vec<Framed> {
        let mut out = Vec::new();
        if let FrameSpec::Line {
            checksum,
            end_token,
            ..
        } = &self.spec
        {
            if !self.discarding && (!self.buf.is_empty() || !self.record.is_empty()) {
                let mut raw = std::mem::take(&mut self.record);
                raw.extend(std::mem::take(&mut self.buf));
                let text = trim_cr(&raw).to_vec();
                let ends = end_token.as_ref().is_none_or(|t| ends_with_token(&text, t));
                if ends {
                    out.push(line_frame(raw, text, checksum.as_ref()));
                }
            }
        }
        if self.spec == FrameSpec::Message && !self.buf.is_empty() {
            let raw = std::mem::take(&mut self.buf);
            out.push(Framed::ok(raw.clone(), raw));
        }
        self.buf.clear();
        self.record.clear();
        self.discarding = false;
        out
    }

    fn push_line(
        &mut self,
        b: u8,
        delimiter: &Delimiter,
        end_token: Option<&str>,
        checksum: Option<&TextChecksum>,
        max: usize,
        out: &mut Vec<Framed>,
    ) {
        self.buf.push(b);
        let body_len = match delimiter {
            Delimiter::Lf | Delimiter::Crlf if b == b'\n' => Some(self.buf.len() - 1),
            Delimiter::Cr if b == b'\r' => Some(self.buf.len() - 1),
            Delimiter::Any if b == b'\n' || b == b'\r' => Some(self.buf.len() - 1),
            Delimiter::Literal(d) if self.buf.ends_with(d) => Some(self.buf.len() - d.len()),
            _ => None,
        };
        let Some(body_len) = body_len else {
            if !self.discarding && self.buf.len() + self.record.len() > max {
                let mut raw = std::mem::take(&mut self.record);
                raw.extend(std::mem::take(&mut self.buf));
                self.discarding = true;
                out.push(Framed::err(raw, FrameError::TooLong { max }));
            } else if self.discarding {
                // Keep what could be the start of a multi-byte delimiter.
                let keep = match delimiter {
                    Delimiter::Literal(d) => d.len().saturating_sub(1),
                    _ => 0,
                };
                let drop = self.buf.len().saturating_sub(keep);
                self.buf.drain(..drop);
            }
            return;
        };
        let raw = std::mem::take(&mut self.buf);
        if std::mem::take(&mut self.discarding) {
            return;
        }
        let mut body = trim_cr(&raw[..body_len]);
        if *delimiter == Delimiter::Cr {
            body = body.strip_prefix(b"\n").unwrap_or(body); // the LF of a CR LF
            if body.is_empty() && self.record.is_empty() {
                return;
            }
        }
        if body.is_empty()
            && self.record.is_empty()
            && matches!(delimiter, Delimiter::Any | Delimiter::Lf | Delimiter::Crlf)
        {
            return;
        }
        match end_token {
            None => out.push(line_frame(raw.clone(), body.to_vec(), checksum)),
            // A "not ready" reply stands alone, never inside a record.
            Some(_)
                if self
                    .ignore
                    .iter()
                    .any(|i| i.as_bytes() == body.trim_ascii()) =>
            {
                out.push(Framed::ok(raw.clone(), body.to_vec()));
            }
            Some(token) => {
                if !self.record.is_empty() {
                    self.record.push(b'\n');
                }
                let ends = ends_with_token(body, token);
                self.record.extend_from_slice(body);
                if ends {
                    let text = std::mem::take(&mut self.record);
                    out.push(line_frame(text.clone(), text, checksum));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn push_stx(
        &mut self,
        b: u8,
        stx: u8,
        etx: u8,
        checksum: Option<ChecksumKind>,
        endian: Endian,
        max: usize,
        out: &mut Vec<Framed>,
    ) {
        if self.buf.is_empty() {
            // Hunting for STX: anything else is line noise between frames.
            if b == stx {
                self.buf.push(b);
            }
            return;
        }
        let check_len = checksum.map_or(0, ChecksumKind::size);
        let etx_at = self
            .buf
            .iter()
            .skip(1)
            .position(|x| *x == etx)
            .map(|p| p + 1);
        if etx_at.is_none() && b == stx {
            let raw = std::mem::replace(&mut self.buf, vec![stx]);
            out.push(Framed::err(raw, FrameError::Truncated));
            return;
        }
        self.buf.push(b);
        let etx_at = etx_at.or_else(|| (b == etx).then_some(self.buf.len() - 1));
        match etx_at {
            Some(at) if self.buf.len() == at + 1 + check_len => {
                let raw = std::mem::take(&mut self.buf);
                let payload = raw[1..at].to_vec();
                let result = match checksum {
                    None => Ok(payload),
                    Some(kind) => {
                        verify(kind, &raw[1..=at], &raw[at + 1..], endian).map(|_| payload)
                    }
                };
                out.push(Framed { raw, result });
            }
            _ if self.buf.len() > max => {
                let raw = std::mem::take(&mut self.buf);
                out.push(Framed::err(raw, FrameError::TooLong { max }));
            }
            _ => {}
        }
    }

    /// The next frame of a binary framing from the buffer, if complete.
    fn next_binary(&mut self, spec: &FrameSpec) -> Option<Framed> {
        loop {
            let step = match spec {
                FrameSpec::Header {
                    magic,
                    length,
                    checksum,
                    max_bytes,
                } => header_step(&self.buf, magic, length, checksum.as_ref(), *max_bytes),
                FrameSpec::Fixed {
                    length,
                    sync,
                    checksum,
                } => fixed_step(&self.buf, *length, sync.as_deref(), checksum.as_ref()),
                FrameSpec::LengthPrefixed {
                    size,
                    endian,
                    max_bytes,
                } => prefixed_step(&self.buf, *size, *endian, *max_bytes),
                FrameSpec::Csafe { max_bytes } => csafe_step(&self.buf, *max_bytes),
                FrameSpec::ModbusRtu => modbus_step(&self.buf),
                FrameSpec::Line { .. } | FrameSpec::StxEtx { .. } | FrameSpec::Message => {
                    return None
                }
            };
            match step {
                Step::NeedMore => return None,
                Step::Skip(n) => {
                    self.buf.drain(..n.min(self.buf.len()));
                }
                Step::Frame { consumed, framed } => {
                    self.buf.drain(..consumed.min(self.buf.len()));
                    return Some(framed);
                }
            }
        }
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
        Some(0) => unreachable_step(),
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

fn unreachable_step() -> Step {
    Step::NeedMore
}

fn header_step(
    buf: &[u8],
    magic: &[u8],
    length: &LengthField,
    checksum: Option<&BinaryChecksum>,
    max: usize,
) -> Step {
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

fn fixed_step(
    buf: &[u8],
    length: usize,
    sync: Option<&[u8]>,
    checksum: Option<&BinaryChecksum>,
) -> Step {
    if let Some(sync) = sync {
        if !buf.starts_with(sync) {
            if buf.len() < sync.len() && sync.starts_with(buf) {
                return Step::NeedMore;
            }
            return skip_to(buf, sync);
        }
    }
    if buf.len() < length {
        return Step::NeedMore;
    }
    // Without a sync pattern, realign one byte at a time after a bad frame.
    checked_frame(&buf[..length], checksum, sync.map_or(1, <[u8]>::len))
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

fn prefixed_step(buf: &[u8], size: usize, endian: Endian, max: usize) -> Step {
    if buf.len() < size {
        return Step::NeedMore;
    }
    let length = read_uint(&buf[..size], endian) as usize;
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

const CSAFE_START: u8 = 0xF1;
const CSAFE_STOP: u8 = 0xF2;
const CSAFE_STUFF: u8 = 0xF3;

fn csafe_step(buf: &[u8], max: usize) -> Step {
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

fn modbus_step(buf: &[u8]) -> Step {
    if buf.len() < 3 {
        return Step::NeedMore;
    }
    let crc_ok = |frame: &[u8]| {
        let (body, crc) = frame.split_at(frame.len() - 2);
        ChecksumKind::Crc16Modbus.compute(body).to_le_bytes() == crc
    };
    // A read request echoed back by a 2-wire RS-485 adapter: skip it whole,
    // or its bytes would be taken for the start of a reply.
    let echo = buf.len() >= 8 && (0x01..=0x04).contains(&buf[1]) && crc_ok(&buf[..8]);
    let echoed = || Step::Frame {
        consumed: 8,
        framed: Framed::err(buf[..8].to_vec(), FrameError::Echo),
    };
    let length = match buf[1] {
        0x01..=0x04 if buf[2] as usize <= 250 => 3 + buf[2] as usize + 2,
        0x05 | 0x06 | 0x0F | 0x10 => 8,
        f if f & 0x80 != 0 && (f & 0x7F) <= 0x10 => 5,
        _ if echo => return echoed(),
        _ => return Step::Skip(1),
    };
    if buf.len() < length {
        return if echo { echoed() } else { Step::NeedMore };
    }
    if crc_ok(&buf[..length]) {
        let raw = buf[..length].to_vec();
        return Step::Frame {
            consumed: length,
            framed: Framed::ok(raw.clone(), raw),
        };
    }
    if echo {
        return echoed();
    }
    if buf.len() < 8 && (0x01..=0x04).contains(&buf[1]) {
        return Step::NeedMore; // may still turn out to be an echoed request
    }
    let checksum = BinaryChecksum {
        kind: ChecksumKind::Crc16Modbus,
        from: 0,
        endian: Endian::Little,
        tail: 0,
    };
    checked_frame(&buf[..length], Some(&checksum), 1)
}

fn trim_cr(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

fn ends_with_token(text: &[u8], token: &str) -> bool {
    let trimmed = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(&text[..0], |p| &text[..=p]);
    trimmed.ends_with(token.as_bytes())
}

/// A completed line: strip and verify a text checksum when there is one.
fn line_frame(raw: Vec<u8>, text: Vec<u8>, checksum: Option<&TextChecksum>) -> Framed {
    let Some(c) = checksum else {
        return Framed::ok(raw, text);
    };
    let sep = c.separator.as_bytes();
    let split = match c.position {
        TextPosition::Suffix => text
            .windows(sep.len())
            .rposition(|w| w == sep)
            .map(|at| (&text[..at], &text[at + sep.len()..])),
        TextPosition::Prefix => find(&text, sep).map(|at| (&text[at + sep.len()..], &text[..at])),
    };
    let Some((body, hex)) = split else {
        return Framed::err(
            raw,
            FrameError::ChecksumMissing {
                separator: c.separator.clone(),
            },
        );
    };
    let hex_text = String::from_utf8_lossy(hex).trim().to_string();
    let Ok(sent) = u16::from_str_radix(&hex_text, 16) else {
        return Framed::err(raw, FrameError::ChecksumNotHex { text: hex_text });
    };
    let computed = c.kind.compute(body.get(c.skip..).unwrap_or_default());
    if computed == sent {
        Framed::ok(raw, body.to_vec())
    } else {
        Framed::err(raw, FrameError::ChecksumMismatch { sent, computed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> FrameSpec {
        toml::from_str::<toml::Table>(toml_text).unwrap();
        #[derive(Deserialize)]
        struct W {
            frame: FrameSpec,
        }
        toml::from_str::<W>(toml_text).unwrap().frame
    }

    fn oks(frames: &[Framed]) -> Vec<Vec<u8>> {
        frames
            .iter()
            .filter_map(|f| f.result.clone().ok())
            .collect()
    }

    fn texts(frames: &[Framed]) -> Vec<String> {
        oks(frames)
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    fn h(s: &str) -> Vec<u8> {
        parse_hex(s).unwrap()
    }

    /// Feeds `input` in every chunk size; all must give the same frames.
    fn all_chunkings(spec: &FrameSpec, input: &[u8]) -> Vec<Framed> {
        let whole = Framer::new(spec).push(input);
        for chunk in 1..input.len() {
            let mut f = Framer::new(spec);
            let split: Vec<_> = input.chunks(chunk).flat_map(|c| f.push(c)).collect();
            assert_eq!(split, whole, "chunk size {chunk}");
        }
        whole
    }

    #[test]
    fn lines_split_across_any_chunking() {
        let s = spec("[frame]\ntype = \"line\"\n");
        assert_eq!(
            texts(&all_chunkings(&s, b"A=1\r\nB=2\r\n\r\nC=3\n")),
            ["A=1", "B=2", "C=3"]
        );
    }

    #[test]
    fn overlong_line_is_an_error_and_the_next_line_decodes() {
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\nmax_bytes = 16\n");
        let frames = Framer::new(&s).push(b"0123456789abcdefXYZ\nOK=1\n");
        assert_eq!(frames[0].result, Err(FrameError::TooLong { max: 16 }));
        assert_eq!(texts(&frames), ["OK=1"]);
    }

    #[test]
    fn finish_flushes_an_unterminated_line() {
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\n");
        let mut f = Framer::new(&s);
        assert!(f.push(b"ID=1").is_empty());
        assert_eq!(texts(&f.finish()), ["ID=1"]);
    }

    #[test]
    fn literal_delimiter_and_end_token_records() {
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\nend_token = \"over\"\n");
        let input = b"hei=172;wei=065.4;\npbf=021.3;over\nwei=1;over\n";
        assert_eq!(
            texts(&all_chunkings(&s, input)),
            ["hei=172;wei=065.4;\npbf=021.3;over", "wei=1;over"]
        );
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"#\"\n");
        assert_eq!(texts(&Framer::new(&s).push(b"a=1#b=2#")), ["a=1", "b=2"]);
    }

    #[test]
    fn nmea_style_text_checksum() {
        let s = spec("[frame]\ntype = \"line\"\n[frame.checksum]\ntype = \"xor\"\nseparator = \"*\"\nskip = 1\n");
        let body = b"$HR,72";
        let x = body[1..].iter().fold(0u8, |a, b| a ^ b);
        let good = format!("$HR,72*{x:02X}\r\n");
        assert_eq!(texts(&Framer::new(&s).push(good.as_bytes())), ["$HR,72"]);
        let bad = Framer::new(&s).push(b"$HR,73*00\r\n");
        assert!(matches!(
            bad[0].result,
            Err(FrameError::ChecksumMismatch { .. })
        ));
        let missing = Framer::new(&s).push(b"$HR,73\r\n");
        assert!(matches!(
            missing[0].result,
            Err(FrameError::ChecksumMissing { .. })
        ));
    }

    fn stx() -> FrameSpec {
        spec("[frame]\ntype = \"stx_etx\"\nchecksum = \"xor\"\nmax_bytes = 64\n")
    }

    #[test]
    fn stx_etx_frame_with_good_bcc() {
        assert_eq!(
            texts(&all_chunkings(
                &stx(),
                &h("024752502C53303030312C3033382E360337")
            )),
            ["GRP,S0001,038.6"]
        );
    }

    #[test]
    fn stx_etx_bad_bcc_is_reported_and_next_frame_decodes() {
        let bad = h("024752502C53303030312C3033382E3603C8");
        let mut input = b"\xFFnoise".to_vec();
        input.extend(&bad);
        input.extend(h("024752502C53303030312C3033382E360337"));
        let frames = all_chunkings(&stx(), &input);
        assert_eq!(
            frames[0].result,
            Err(FrameError::ChecksumMismatch {
                sent: 0xC8,
                computed: 0x37
            })
        );
        assert_eq!(frames[0].raw, bad);
        assert_eq!(texts(&frames), ["GRP,S0001,038.6"]);
    }

    #[test]
    fn stx_inside_a_partial_frame_resynchronises() {
        let mut input = vec![0x02, b'G', b'R'];
        input.extend(h("024752502C53303030312C3033382E360337"));
        let frames = Framer::new(&stx()).push(&input);
        assert_eq!(frames[0].result, Err(FrameError::Truncated));
        assert_eq!(texts(&frames), ["GRP,S0001,038.6"]);
    }

    fn sum8_header() -> FrameSpec {
        spec("[frame]\ntype = \"header\"\nmagic = \"AA 55\"\nlength = { offset = 2, size = 1, overhead = 4 }\nchecksum = { type = \"sum8\", from = 2 }\n")
    }

    #[test]
    fn header_frames_with_sum8_after_garbage() {
        let mut input = h("00 AA 13 AA");
        input.extend(h("AA550521009E0001C5"));
        input.extend(h("AA550521FFD60002FD"));
        let frames = all_chunkings(&sum8_header(), &input);
        assert_eq!(
            oks(&frames),
            [h("AA550521009E0001C5"), h("AA550521FFD60002FD")]
        );
    }

    #[test]
    fn a_corrupt_header_frame_does_not_swallow_the_next_one() {
        // Wrong checksum; a length field claiming more than max_bytes.
        let mut input = h("AA550521009E0001C6");
        input.extend(h("AA55FF"));
        input.extend(h("AA550521FFD60002FD"));
        let s = spec("[frame]\ntype = \"header\"\nmagic = \"AA 55\"\nlength = { offset = 2, overhead = 4 }\nchecksum = { type = \"sum8\", from = 2 }\nmax_bytes = 64\n");
        let frames = all_chunkings(&s, &input);
        assert!(matches!(
            frames[0].result,
            Err(FrameError::ChecksumMismatch {
                sent: 0xC6,
                computed: 0xC5
            })
        ));
        assert!(frames
            .iter()
            .any(|f| matches!(f.result, Err(FrameError::BadLength { .. }))));
        assert_eq!(oks(&frames), [h("AA550521FFD60002FD")]);
    }

    #[test]
    fn header_frames_with_crc16_modbus_little_endian() {
        let s = spec("[frame]\ntype = \"header\"\nmagic = \"A5 5A\"\nlength = { offset = 2, overhead = 5 }\nchecksum = { type = \"crc16_modbus\", endian = \"little\" }\n");
        assert_eq!(
            oks(&all_chunkings(&s, &h("A55A07316E1403000000BDDA"))),
            [h("A55A07316E1403000000BDDA")]
        );
        assert!(Framer::new(&s).push(&h("A55A07316E1403000000BDDB"))[0]
            .result
            .is_err());
    }

    #[test]
    fn id_card_sam_frames_with_u16_length_and_xor() {
        let s = spec("[frame]\ntype = \"header\"\nmagic = \"AA AA AA 96 69\"\nlength = { offset = 5, size = 2, overhead = 7 }\nchecksum = { type = \"xor\", from = 5 }\n");
        let input = h("AAAAAA96690003200122AAAAAA96690003200221");
        assert_eq!(oks(&all_chunkings(&s, &input)).len(), 2);
    }

    #[test]
    fn length_prefixed_json() {
        let s = spec("[frame]\ntype = \"length_prefixed\"\nsize = 2\n");
        let input = h("00307B226974656D223A227369745F7570735F316D696E222C22736964223A225330303031222C22636F756E74223A33327D");
        let frames = all_chunkings(&s, &input);
        assert_eq!(
            texts(&frames),
            ["{\"item\":\"sit_ups_1min\",\"sid\":\"S0001\",\"count\":32}"]
        );
    }

    #[test]
    fn fixed_length_frames_with_sync() {
        let s = spec("[frame]\ntype = \"fixed\"\nlength = 4\nsync = \"7E\"\nchecksum = { type = \"xor\", from = 1 }\n");
        let frames = all_chunkings(&s, &h("00 7E 01 02 03 FF 7E 05 06 03"));
        assert_eq!(oks(&frames), [h("7E010203"), h("7E050603")]);
        assert!(frames.iter().any(|f| f.result.is_err()) || frames.len() == 2);
    }

    #[test]
    fn csafe_unstuffs_and_checks() {
        let s = spec("[frame]\ntype = \"csafe\"\n");
        assert_eq!(oks(&all_chunkings(&s, &h("F19191F2"))), [h("91")]);
        assert_eq!(
            oks(&all_chunkings(&s, &h("F11A0305F30100EDF2"))),
            [h("1A0305F100")]
        );
        assert!(Framer::new(&s).push(&h("F19190F2"))[0].result.is_err());
        assert!(matches!(
            Framer::new(&s).push(&h("F1F309F2"))[0].result,
            Err(FrameError::BadStuffing(9))
        ));
    }

    #[test]
    fn modbus_responses_and_exceptions() {
        let s = FrameSpec::ModbusRtu;
        let frames = all_chunkings(&s, &h("01030400FA000CDA07 018302C0F1"));
        assert_eq!(oks(&frames), [h("01030400FA000CDA07"), h("018302C0F1")]);
        let frames = Framer::new(&s).push(&h("FF 01030400FA000CDA08 01030400FA000CDA07"));
        assert_eq!(oks(&frames), [h("01030400FA000CDA07")]);
    }

    #[test]
    fn an_echoed_modbus_request_does_not_swallow_the_replies() {
        let frames = all_chunkings(
            &FrameSpec::ModbusRtu,
            &h("010300000002C40B 01030400FA000CDA07 010300000002C40B 01030400FA000CDA07"),
        );
        assert_eq!(
            oks(&frames),
            [h("01030400FA000CDA07"), h("01030400FA000CDA07")]
        );
        assert!(frames
            .iter()
            .all(|f| f.result.is_ok() || f.result == Err(FrameError::Echo)));
    }

    #[test]
    fn not_ready_lines_stand_alone_beside_end_token_records() {
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"lf\"\nend_token = \"over\"\n");
        let mut f = Framer::new(&s).ignoring(&["measing".to_string()]);
        assert_eq!(
            texts(&f.push(b"measing\nhei=172;\nwei=65.4;over\n")),
            ["measing", "hei=172;\nwei=65.4;over"]
        );
    }

    #[test]
    fn cr_delimited_lines_tolerate_crlf() {
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"cr\"\n");
        let frames = Framer::new(&s).push(b"A=1\r\nB=2\r\n");
        assert_eq!(texts(&frames), ["A=1", "B=2"]);
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn a_multi_byte_delimiter_resynchronises_after_an_overlong_line() {
        let s = spec("[frame]\ntype = \"line\"\ndelimiter = \"END\"\nmax_bytes = 8\n");
        assert_eq!(
            texts(&all_chunkings(&s, b"0123456789abcdefENDa=1END")),
            ["a=1"]
        );
    }

    #[test]
    fn fixed_frames_without_sync_realign_after_a_lost_byte() {
        let s = spec("[frame]\ntype = \"fixed\"\nlength = 3\nchecksum = { type = \"xor\" }\n");
        // 01 02 03 is good (01^02 = 03); a stray byte shifts the stream.
        let frames = Framer::new(&s).push(&h("FF 01 02 03 01 02 03"));
        assert_eq!(oks(&frames), [h("010203"), h("010203")]);
    }
}
