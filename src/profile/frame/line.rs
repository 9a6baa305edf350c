//! `line` framing: ASCII lines, optionally grouped into records ending in
//! an end token, optionally carrying a hex text checksum. The payload is
//! the text without its delimiter (and without the checksum).

use serde::{Deserialize, Deserializer};

use super::{default_max_bytes, FrameError, Framed, SpecProblem, State};
use crate::codec::checksum::ChecksumKind;

/// ASCII lines, optionally grouped into a record ending in `end_token`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    #[serde(default)]
    pub delimiter: Delimiter,
    /// A record is complete when a line ends with this (e.g. `over`).
    #[serde(default)]
    pub end_token: Option<String>,
    #[serde(default)]
    pub checksum: Option<TextChecksum>,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
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

impl LineSpec {
    pub fn problems(&self) -> Vec<SpecProblem> {
        match &self.checksum {
            Some(c) if c.separator.is_empty() => vec![(
                "checksum",
                "a text checksum needs a separator".into(),
                "set separator = \"*\" (or what the device uses)".into(),
            )],
            _ => Vec::new(),
        }
    }

    pub fn max_frame_bytes(&self) -> Option<usize> {
        Some(self.max_bytes)
    }

    /// Takes one byte of the stream.
    pub(super) fn push(&self, state: &mut State, b: u8, out: &mut Vec<Framed>) {
        let (delimiter, max) = (&self.delimiter, self.max_bytes);
        let checksum = self.checksum.as_ref();
        state.buf.push(b);
        let body_len = match delimiter {
            Delimiter::Lf | Delimiter::Crlf if b == b'\n' => Some(state.buf.len() - 1),
            Delimiter::Cr if b == b'\r' => Some(state.buf.len() - 1),
            Delimiter::Any if b == b'\n' || b == b'\r' => Some(state.buf.len() - 1),
            Delimiter::Literal(d) if state.buf.ends_with(d) => Some(state.buf.len() - d.len()),
            _ => None,
        };
        let Some(body_len) = body_len else {
            if !state.discarding && state.buf.len() + state.record.len() > max {
                let mut raw = std::mem::take(&mut state.record);
                raw.extend(std::mem::take(&mut state.buf));
                state.discarding = true;
                out.push(Framed::err(raw, FrameError::TooLong { max }));
            } else if state.discarding {
                // Keep what could be the start of a multi-byte delimiter.
                let keep = match delimiter {
                    Delimiter::Literal(d) => d.len().saturating_sub(1),
                    _ => 0,
                };
                let drop = state.buf.len().saturating_sub(keep);
                state.buf.drain(..drop);
            }
            return;
        };
        let raw = std::mem::take(&mut state.buf);
        if std::mem::take(&mut state.discarding) {
            return;
        }
        let mut body = trim_cr(&raw[..body_len]);
        if *delimiter == Delimiter::Cr {
            body = body.strip_prefix(b"\n").unwrap_or(body); // the LF of a CR LF
            if body.is_empty() && state.record.is_empty() {
                return;
            }
        }
        if body.is_empty()
            && state.record.is_empty()
            && matches!(delimiter, Delimiter::Any | Delimiter::Lf | Delimiter::Crlf)
        {
            return;
        }
        match self.end_token.as_deref() {
            None => out.push(line_frame(raw.clone(), body.to_vec(), checksum)),
            // A "not ready" reply stands alone, never inside a record.
            Some(_)
                if state
                    .ignore
                    .iter()
                    .any(|i| i.as_bytes() == body.trim_ascii()) =>
            {
                out.push(Framed::ok(raw.clone(), body.to_vec()));
            }
            Some(token) => {
                if !state.record.is_empty() {
                    state.record.push(b'\n');
                }
                let ends = ends_with_token(body, token);
                state.record.extend_from_slice(body);
                if ends {
                    let text = std::mem::take(&mut state.record);
                    out.push(line_frame(text.clone(), text, checksum));
                }
            }
        }
    }

    /// Ends the stream: a trailing line without its delimiter is a frame.
    pub(super) fn finish(&self, state: &mut State, out: &mut Vec<Framed>) {
        if !state.discarding && (!state.buf.is_empty() || !state.record.is_empty()) {
            let mut raw = std::mem::take(&mut state.record);
            raw.extend(std::mem::take(&mut state.buf));
            let text = trim_cr(&raw).to_vec();
            let ends = self
                .end_token
                .as_ref()
                .is_none_or(|t| ends_with_token(&text, t));
            if ends {
                out.push(line_frame(raw, text, self.checksum.as_ref()));
            }
        }
    }
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
        TextPosition::Prefix => {
            super::find(&text, sep).map(|at| (&text[at + sep.len()..], &text[..at]))
        }
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
