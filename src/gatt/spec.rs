//! The `[decode] type = "gatt"` table of a Bluetooth LE profile: which
//! characteristics to subscribe to, which built-in codec each uses, codec
//! options and per-field overrides; and [`GattDecoder`], which applies it
//! to one peripheral's notifications.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{codec_name, parse_uuid16, Assembler, GattError, Options, Override, CODECS};
use crate::record::Measurement;
use crate::vocabulary::Vocabulary;

/// A BLE profile's decoding settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Characteristics to subscribe to (16-bit UUIDs); by default every
    /// notifying characteristic with a built-in codec.
    #[serde(default)]
    pub characteristics: Vec<String>,
    /// Characteristics decoded with another's codec, for firmware that
    /// publishes on the wrong one: `alias = { "2ACE" = "2AD2" }`.
    #[serde(default)]
    pub alias: BTreeMap<String, String>,
    /// Width of the FTMS treadmill pace fields (1 or 2 bytes).
    #[serde(default = "default_pace_bytes")]
    pub pace_bytes: usize,
    /// For speed from wheel revolutions (CSC, Cycling Power).
    #[serde(default = "default_wheel_mm")]
    pub wheel_circumference_mm: f64,
    #[serde(default, rename = "override")]
    pub overrides: Vec<Override>,
}

fn default_pace_bytes() -> usize {
    1
}

fn default_wheel_mm() -> f64 {
    2105.0
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            characteristics: Vec::new(),
            alias: BTreeMap::new(),
            pace_bytes: default_pace_bytes(),
            wheel_circumference_mm: default_wheel_mm(),
            overrides: Vec::new(),
        }
    }
}

impl Spec {
    /// Problems as (key, message, fix).
    pub fn problems(&self) -> Vec<(&'static str, String, String)> {
        let mut out = Vec::new();
        let uuid_fix = || "write a 16-bit UUID as 4 hex digits, e.g. \"2A37\"".to_string();
        for c in &self.characteristics {
            match parse_uuid16(c) {
                None => out.push(("characteristics", format!("\"{c}\" is not a UUID"), uuid_fix())),
                Some(u) if self.codec_for(u).is_none() => out.push((
                    "characteristics",
                    format!("characteristic {u:04X} has no built-in codec"),
                    "alias it to a characteristic with the same layout, or use an MQTT/serial profile".into(),
                )),
                _ => {}
            }
        }
        for (from, to) in &self.alias {
            match (parse_uuid16(from), parse_uuid16(to)) {
                (Some(_), Some(t)) if codec_name(t).is_none() => out.push((
                    "alias",
                    format!("alias target {t:04X} has no built-in codec"),
                    "alias to one of the characteristics in docs/device-profiles.md".into(),
                )),
                (Some(_), Some(_)) => {}
                _ => out.push((
                    "alias",
                    format!("alias \"{from}\" = \"{to}\" is not two UUIDs"),
                    uuid_fix(),
                )),
            }
        }
        if !matches!(self.pace_bytes, 1 | 2) {
            out.push((
                "pace_bytes",
                format!("pace_bytes = {} is not 1 or 2", self.pace_bytes),
                "use 1 (u8 0.1 km/min) or 2".into(),
            ));
        }
        if !(self.wheel_circumference_mm > 100.0 && self.wheel_circumference_mm < 5000.0) {
            out.push((
                "wheel_circumference_mm",
                format!(
                    "wheel_circumference_mm = {} is not a bicycle wheel",
                    self.wheel_circumference_mm
                ),
                "a 700x25c road wheel is 2105 mm".into(),
            ));
        }
        for o in &self.overrides {
            if let Some(c) = &o.characteristic {
                if parse_uuid16(c).is_none() {
                    out.push((
                        "override",
                        format!("override of \"{}\": \"{c}\" is not a UUID", o.field),
                        uuid_fix(),
                    ));
                }
            }
            if let Some(m) = &o.metric {
                if Vocabulary::get().metric(m).is_none() {
                    let hint = Vocabulary::get()
                        .suggest(m)
                        .map(|s| format!("did you mean \"{s}\"?"))
                        .unwrap_or_else(|| "use an id from metrics.toml".into());
                    out.push((
                        "override",
                        format!("override of \"{}\": unknown metric \"{m}\"", o.field),
                        hint,
                    ));
                }
            }
            if o.scale.is_some_and(|s| !s.is_finite()) {
                out.push((
                    "override",
                    format!("override of \"{}\": scale is not a number", o.field),
                    "e.g. scale = 0.1".into(),
                ));
            }
        }
        out
    }

    /// The codec that decodes `characteristic`, if this profile wants it.
    pub fn codec_for(&self, characteristic: u16) -> Option<u16> {
        let wanted = self.characteristics.is_empty()
            || self
                .characteristics
                .iter()
                .any(|c| parse_uuid16(c) == Some(characteristic));
        let codec = self
            .alias
            .iter()
            .find(|(from, _)| parse_uuid16(from) == Some(characteristic))
            .and_then(|(_, to)| parse_uuid16(to))
            .unwrap_or(characteristic);
        (wanted && codec_name(codec).is_some()).then_some(codec)
    }

    /// [`Spec::codec_for`], or the error that says why there is none.
    pub fn route(&self, characteristic: u16) -> Result<u16, GattError> {
        self.codec_for(characteristic)
            .ok_or(if codec_name(characteristic).is_some() {
                GattError::NotWanted(characteristic)
            } else {
                GattError::Unknown(characteristic)
            })
    }

    pub fn options(&self) -> Options {
        Options {
            pace_bytes: self.pace_bytes,
            wheel_circumference_m: self.wheel_circumference_mm / 1000.0,
        }
    }
}

/// One peripheral's decoder: codec choice, assembly and overrides.
#[derive(Debug)]
pub struct GattDecoder {
    spec: Spec,
    /// (characteristic, codec) for every characteristic the profile
    /// decodes, worked out once from the spec's text.
    routes: Vec<(u16, u16)>,
    assembler: Assembler,
}

impl GattDecoder {
    pub fn new(spec: &Spec) -> Self {
        let candidates = CODECS
            .iter()
            .map(|c| c.uuid)
            .chain(spec.alias.keys().filter_map(|a| parse_uuid16(a)));
        GattDecoder {
            routes: candidates
                .filter_map(|c| spec.codec_for(c).map(|codec| (c, codec)))
                .collect(),
            spec: spec.clone(),
            assembler: Assembler::new(spec.options()),
        }
    }

    /// Decodes one notification; returns the records it completed (none
    /// for the first part of a split record).
    pub fn push(
        &mut self,
        characteristic: u16,
        bytes: &[u8],
    ) -> Result<Vec<Measurement>, GattError> {
        let codec = match self.routes.iter().find(|(c, _)| *c == characteristic) {
            Some((_, codec)) => *codec,
            None => self.spec.route(characteristic)?,
        };
        self.assembler
            .push(codec, bytes)?
            .into_iter()
            .map(|d| d.normalize(characteristic, codec, &self.spec.overrides))
            .collect()
    }

    /// The link dropped: forget partial records and counters.
    pub fn reset(&mut self) {
        self.assembler.reset();
    }
}
