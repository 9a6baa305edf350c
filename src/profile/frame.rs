//! Framing: turns a byte stream into frames, resynchronising after garbage.
//!
//! A [`Framer`] is fed whatever the transport read (any chunking) and yields
//! complete frames or framing errors (with the raw bytes, for the log). It is
//! pure and keeps at most `max_bytes` of partial frame.

use serde::Deserialize;
use thiserror::Error;

/// How a profile delimits frames, as written in its `[frame]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum FrameSpec {
    /// ASCII lines.
    Line {
        #[serde(default)]
        delimiter: LineDelimiter,
        #[serde(default = "default_max_bytes")]
        max_bytes: usize,
    },
    /// `STX payload ETX [BCC]`; the payload is what lies between STX and ETX.
    StxEtx {
        #[serde(default)]
        checksum: StxChecksum,
        #[serde(default = "default_max_bytes")]
        max_bytes: usize,
    },
}

fn default_max_bytes() -> usize {
    1024
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum LineDelimiter {
    /// LF, with a CR before it stripped.
    Lf,
    /// CR alone.
    Cr,
    /// CR LF (a bare LF also ends the line).
    Crlf,
    /// Any of CR, LF or CR LF; empty lines are skipped.
    #[default]
    Any,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum StxChecksum {
    /// One byte after ETX: XOR of every byte after STX up to and including ETX.
    #[default]
    Xor,
    /// No checksum byte.
    None,
}

const STX: u8 = 0x02;
const ETX: u8 = 0x03;

/// A framing failure, with the bytes that were thrown away.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum FrameError {
    #[error("checksum mismatch: frame says 0x{sent:02X}, computed 0x{computed:02X}; check baud/parity and the profile's checksum")]
    ChecksumMismatch { sent: u8, computed: u8 },
    #[error("frame longer than {max} bytes without a delimiter; check the profile's delimiter and max_bytes")]
    TooLong { max: usize },
    #[error("new frame start before the previous frame ended; partial frame dropped")]
    Truncated,
}

/// A framing outcome with the raw bytes it covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Framed {
    pub raw: Vec<u8>,
    pub result: Result<Vec<u8>, FrameError>,
}

/// Stateful splitter for one device's byte stream.
#[derive(Debug)]
pub struct Framer {
    spec: FrameSpec,
    buf: Vec<u8>,
    /// Skipping input until the next delimiter (after an overlong frame).
    discarding: bool,
}

impl Framer {
    pub fn new(spec: &FrameSpec) -> Framer {
        Framer {
            spec: spec.clone(),
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// Feeds bytes; returns every frame (or framing error) they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Framed> {
        let mut out = Vec::new();
        for &b in bytes {
            match self.spec {
                FrameSpec::Line {
                    delimiter,
                    max_bytes,
                } => self.push_line(b, delimiter, max_bytes, &mut out),
                FrameSpec::StxEtx {
                    checksum,
                    max_bytes,
                } => self.push_stx(b, checksum, max_bytes, &mut out),
            }
        }
        out
    }

    /// Ends the stream: a trailing line without its delimiter becomes a frame.
    pub fn finish(&mut self) -> Vec<Framed> {
        let mut out = Vec::new();
        if let FrameSpec::Line { .. } = self.spec {
            if !self.buf.is_empty() && !self.discarding {
                let raw = std::mem::take(&mut self.buf);
                let line = trim_cr(&raw).to_vec();
                out.push(Framed {
                    raw,
                    result: Ok(line),
                });
            }
        }
        self.buf.clear();
        self.discarding = false;
        out
    }

    fn push_line(&mut self, b: u8, delimiter: LineDelimiter, max: usize, out: &mut Vec<Framed>) {
        let ends = match delimiter {
            LineDelimiter::Lf | LineDelimiter::Crlf => b == b'\n',
            LineDelimiter::Cr => b == b'\r',
            LineDelimiter::Any => b == b'\n' || b == b'\r',
        };
        if ends {
            let mut raw = std::mem::take(&mut self.buf);
            raw.push(b);
            if std::mem::take(&mut self.discarding) {
                return;
            }
            let body = trim_cr(&raw[..raw.len() - 1]).to_vec();
            if body.is_empty() && delimiter == LineDelimiter::Any {
                return;
            }
            out.push(Framed {
                raw,
                result: Ok(body),
            });
            return;
        }
        if self.discarding {
            return;
        }
        self.buf.push(b);
        if self.buf.len() > max {
            let raw = std::mem::take(&mut self.buf);
            self.discarding = true;
            out.push(Framed {
                raw,
                result: Err(FrameError::TooLong { max }),
            });
        }
    }

    fn push_stx(&mut self, b: u8, checksum: StxChecksum, max: usize, out: &mut Vec<Framed>) {
        if self.buf.is_empty() {
            // Hunting for STX: anything else is line noise between frames.
            if b == STX {
                self.buf.push(b);
            }
            return;
        }
        let etx_seen = self.buf.len() >= 2
            && self.buf[self.buf.len() - 1] == ETX
            && checksum == StxChecksum::Xor;
        if b == STX && !etx_seen {
            let raw = std::mem::replace(&mut self.buf, vec![STX]);
            out.push(Framed {
                raw,
                result: Err(FrameError::Truncated),
            });
            return;
        }
        self.buf.push(b);
        let complete = match checksum {
            StxChecksum::None => b == ETX,
            StxChecksum::Xor => etx_seen,
        };
        if complete {
            let raw = std::mem::take(&mut self.buf);
            let etx_at = match checksum {
                StxChecksum::None => raw.len() - 1,
                StxChecksum::Xor => raw.len() - 2,
            };
            let payload = raw[1..etx_at].to_vec();
            let result = match checksum {
                StxChecksum::None => Ok(payload),
                StxChecksum::Xor => {
                    let computed = raw[1..=etx_at].iter().fold(0u8, |a, b| a ^ b);
                    let sent = raw[raw.len() - 1];
                    if computed == sent {
                        Ok(payload)
                    } else {
                        Err(FrameError::ChecksumMismatch { sent, computed })
                    }
                }
            };
            out.push(Framed { raw, result });
        } else if self.buf.len() > max {
            let raw = std::mem::take(&mut self.buf);
            out.push(Framed {
                raw,
                result: Err(FrameError::TooLong { max }),
            });
        }
    }
}

fn trim_cr(bytes: &[u8]) -> &[u8] {
    bytes.strip_suffix(b"\r").unwrap_or(bytes)
}

/// Uppercase hex of `bytes`, for logs and error messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Parses hex with optional spaces, `0x` prefixes or colons.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let clean: String = text
        .split(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .map(|t| t.trim_start_matches("0x").trim_start_matches("0X"))
        .collect();
    if !clean.len().is_multiple_of(2) {
        return Err(format!("hex has an odd number of digits ({})", clean.len()));
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&clean[i..i + 2], 16)
                .map_err(|_| format!("\"{}\" at digit {} is not hex", &clean[i..i + 2], i))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(delimiter: LineDelimiter) -> Framer {
        Framer::new(&FrameSpec::Line {
            delimiter,
            max_bytes: 16,
        })
    }

    fn oks(frames: &[Framed]) -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| f.result.as_ref().ok())
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    #[test]
    fn lines_split_across_any_chunking() {
        let input = b"A=1\r\nB=2\r\n\r\nC=3\n";
        for chunk in 1..input.len() {
            let mut f = line(LineDelimiter::Any);
            let frames: Vec<_> = input.chunks(chunk).flat_map(|c| f.push(c)).collect();
            assert_eq!(oks(&frames), ["A=1", "B=2", "C=3"], "chunk size {chunk}");
        }
    }

    #[test]
    fn crlf_lines_keep_empty_fields_and_strip_cr() {
        let mut f = line(LineDelimiter::Crlf);
        assert_eq!(oks(&f.push(b"x\r\n")), ["x"]);
    }

    #[test]
    fn overlong_line_is_an_error_and_the_next_line_decodes() {
        let mut f = line(LineDelimiter::Lf);
        let frames = f.push(b"0123456789abcdefXYZ\nOK=1\n");
        assert_eq!(frames[0].result, Err(FrameError::TooLong { max: 16 }));
        assert_eq!(oks(&frames), ["OK=1"]);
    }

    #[test]
    fn finish_flushes_an_unterminated_line() {
        let mut f = line(LineDelimiter::Lf);
        assert!(f.push(b"ID=1").is_empty());
        assert_eq!(oks(&f.finish()), ["ID=1"]);
    }

    fn stx() -> Framer {
        Framer::new(&FrameSpec::StxEtx {
            checksum: StxChecksum::Xor,
            max_bytes: 64,
        })
    }

    #[test]
    fn stx_etx_frame_with_good_bcc() {
        let bytes = parse_hex("024752502C53303030312C3033382E360337").unwrap();
        let frames = stx().push(&bytes);
        assert_eq!(oks(&frames), ["GRP,S0001,038.6"]);
    }

    #[test]
    fn stx_etx_bad_bcc_is_reported_and_next_frame_decodes() {
        let bad = parse_hex("024752502C53303030312C3033382E3603C8").unwrap();
        let good = parse_hex("024752502C53303030312C3033382E360337").unwrap();
        let mut f = stx();
        let mut input = b"\xFFnoise".to_vec();
        input.extend(&bad);
        input.extend(&good);
        let frames = f.push(&input);
        assert_eq!(
            frames[0].result,
            Err(FrameError::ChecksumMismatch {
                sent: 0xC8,
                computed: 0x37
            })
        );
        assert_eq!(frames[0].raw, bad);
        assert_eq!(oks(&frames), ["GRP,S0001,038.6"]);
    }

    #[test]
    fn stx_inside_a_partial_frame_resynchronises() {
        let good = parse_hex("024752502C53303030312C3033382E360337").unwrap();
        let mut input = vec![STX, b'G', b'R'];
        input.extend(&good);
        let frames = stx().push(&input);
        assert_eq!(frames[0].result, Err(FrameError::Truncated));
        assert_eq!(oks(&frames), ["GRP,S0001,038.6"]);
    }

    #[test]
    fn hex_parsing_accepts_common_spellings() {
        assert_eq!(parse_hex("02 47 0x03").unwrap(), vec![2, 0x47, 3]);
        assert!(parse_hex("0G").is_err());
        assert!(parse_hex("123").is_err());
        assert_eq!(hex(&[0xAB, 0x01]), "AB01");
    }
}
