//! The runtime decoder: a profile applied to one device's byte stream
//! ([`DeviceDecoder`]: frames, then decodes each), and the same for whole
//! captures and for GATT values notified in turn.

use super::decode::{self, DecodeContext, DecodeError};
use super::frame::{FrameError, Framed, Framer};
use super::spec::{DecodeSpec, FieldSpec, Profile};
use crate::gatt;
use crate::record::{Measurement, StationEvent};

impl Profile {
    /// Frames and decodes a complete capture (a trailing unterminated line
    /// counts as a frame).
    pub fn decode_all(
        &self,
        input: &[u8],
        ctx: &DecodeContext,
    ) -> Vec<Result<Measurement, FrameFailure>> {
        let mut decoder = DeviceDecoder::new(self, ctx.clone());
        let mut out = decoder.feed(input);
        out.extend(decoder.finish());
        out.retain(|o| !matches!(o, Err(f) if f.ignored));
        out
    }
}

/// Decodes characteristic values notified in turn with a gatt profile's
/// settings: one result per completed record or rejected value.
pub fn decode_gatt(
    spec: &gatt::Spec,
    characteristic: u16,
    values: &[Vec<u8>],
) -> Vec<Result<Measurement, FrameFailure>> {
    let mut decoder = gatt::GattDecoder::new(spec);
    let mut out = Vec::new();
    for value in values {
        match decoder.push(characteristic, value) {
            Ok(records) => out.extend(records.into_iter().map(Ok)),
            Err(e) => out.push(Err(FrameFailure {
                raw: value.clone(),
                error: e.to_string(),
                corrupt: true,
                ignored: false,
                rejected_scan: None,
            })),
        }
    }
    out
}

/// A frame that could not be turned into a measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameFailure {
    /// The raw bytes, for the log (as hex).
    pub raw: Vec<u8>,
    pub error: String,
    /// Corrupt (counted as a bad frame) rather than merely not ours.
    pub corrupt: bool,
    /// One of the profile's `ignore` payloads ("not ready" replies).
    pub ignored: bool,
    /// A subject id that failed its check: the problem's code and the
    /// scan's keyed fingerprint (never the id).
    pub rejected_scan: Option<(&'static str, String)>,
}

/// A profile applied to one device's byte stream.
#[derive(Debug)]
pub struct DeviceDecoder {
    framer: Framer,
    decode: DecodeSpec,
    fields: Vec<FieldSpec>,
    ignore: Vec<String>,
    session_end: Vec<String>,
    ctx: DecodeContext,
}

impl DeviceDecoder {
    pub fn new(profile: &Profile, ctx: DecodeContext) -> DeviceDecoder {
        DeviceDecoder {
            framer: Framer::new(&profile.frame).ignoring(&profile.ignore),
            decode: profile.decode.clone(),
            fields: profile.fields.clone(),
            ignore: profile.ignore.clone(),
            session_end: profile.session_end.clone(),
            ctx,
        }
    }

    /// Decodes one whole message (an MQTT payload) as one frame.
    pub fn decode_message(&self, payload: &[u8]) -> Result<Measurement, FrameFailure> {
        self.decode_framed(Framed {
            raw: payload.to_vec(),
            result: Ok(payload.to_vec()),
        })
    }

    /// Feeds bytes as read; returns a result for every completed frame.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Result<Measurement, FrameFailure>> {
        let framed = self.framer.push(bytes);
        framed.into_iter().map(|f| self.decode_framed(f)).collect()
    }

    /// Ends the stream (see [`Framer::finish`]).
    pub fn finish(&mut self) -> Vec<Result<Measurement, FrameFailure>> {
        let framed = self.framer.finish();
        framed.into_iter().map(|f| self.decode_framed(f)).collect()
    }

    fn decode_framed(&self, framed: Framed) -> Result<Measurement, FrameFailure> {
        let payload = framed.result.map_err(|e| FrameFailure {
            raw: framed.raw.clone(),
            ignored: e == FrameError::Echo,
            corrupt: e != FrameError::Echo,
            error: e.to_string(),
            rejected_scan: None,
        })?;
        let text = String::from_utf8_lossy(&payload);
        if self.ignore.iter().any(|i| text.trim() == i) {
            return Err(FrameFailure {
                raw: framed.raw,
                error: format!("\"{}\" ignored", text.trim()),
                corrupt: false,
                ignored: true,
                rejected_scan: None,
            });
        }
        if self.session_end.iter().any(|end| text.trim() == end) {
            return Ok(Measurement {
                event: Some(StationEvent::EndSession),
                ..Measurement::default()
            });
        }
        decode::decode(&self.decode, &self.fields, &payload, &self.ctx).map_err(|e| FrameFailure {
            raw: framed.raw,
            corrupt: e.is_corrupt(),
            error: e.to_string(),
            ignored: false,
            rejected_scan: match e {
                DecodeError::BadSubject {
                    problem,
                    fingerprint,
                } => Some((problem.code(), fingerprint)),
                _ => None,
            },
        })
    }
}
