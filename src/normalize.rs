//! The one normalizer: every decoder (profile fields and the GATT codecs)
//! turns a device's number into a [`Reading`] here.
//!
//! The steps, in order: the decoder's scale and offset (a profile field's
//! `scale`/`add`, a GATT override's `scale`), conversion from the device's
//! unit to the metric's canonical unit, rounding away binary noise
//! ([`units::round`]), a finiteness check, and the plausibility flag.
//!
//! What the reading keeps of the device's side (docs/mqtt-api.md):
//! - `source_value` is the number the device sent, before scale, offset and
//!   unit conversion, present exactly when the final value differs from it
//!   (both compared after rounding, so binary noise alone never adds it);
//! - `source_unit` is the device's unit, present exactly when it differs
//!   from the canonical unit.
//!
//! For a profile the device's number is the field as read from the frame;
//! for a GATT codec it is the characteristic's value at its specified
//! resolution (a weight of 144.2 lb, not the raw 2884 counts of 0.05 lb).

use thiserror::Error;

use crate::record::{Quality, Reading};
use crate::units::{self, UnitError};
use crate::vocabulary::Vocabulary;

/// A device's number and how the decoder says to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Source<'a> {
    /// Canonical metric id.
    pub metric: &'a str,
    /// The number the device sent.
    pub number: f64,
    /// The device's unit; `None` when it sends the canonical unit.
    pub unit: Option<&'a str>,
    /// Multiplies the number (a vendor's resolution).
    pub scale: f64,
    /// Added after scaling, before unit conversion.
    pub add: f64,
}

impl<'a> Source<'a> {
    /// `number` of `metric` in `unit`, without scale or offset.
    pub fn new(metric: &'a str, number: f64, unit: Option<&'a str>) -> Source<'a> {
        Source {
            metric,
            number,
            unit,
            scale: 1.0,
            add: 0.0,
        }
    }
}

/// Why a number could not become a reading.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum NormalizeError {
    #[error("unknown metric id \"{0}\"")]
    UnknownMetric(String),
    /// The number, or the number after scale, offset or conversion, is not
    /// finite; holds the device's number.
    #[error("{0} is not a finite number")]
    NotFinite(f64),
    #[error("{0}")]
    Unit(#[from] UnitError),
}

/// Normalizes one number: see the module documentation for the rule.
pub fn reading(source: Source) -> Result<Reading, NormalizeError> {
    let metric = Vocabulary::get()
        .metric(source.metric)
        .ok_or_else(|| NormalizeError::UnknownMetric(source.metric.to_string()))?;
    let number = source.number;
    let scaled = number * source.scale + source.add;
    if !scaled.is_finite() {
        return Err(NormalizeError::NotFinite(number));
    }
    let unit = source.unit.unwrap_or(&metric.unit);
    let value = units::round(units::convert(scaled, unit, &metric.unit)?);
    if !value.is_finite() {
        return Err(NormalizeError::NotFinite(number));
    }
    let sent = units::round(number);
    Ok(Reading {
        metric: source.metric.to_string(),
        value,
        unit: metric.unit.clone(),
        quality: if metric.in_range(value) {
            Quality::Ok
        } else {
            Quality::OutOfRange
        },
        source_value: (value != sent).then_some(sent),
        source_unit: (unit != metric.unit).then(|| unit.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(number: f64, unit: Option<&str>, scale: f64, add: f64) -> Reading {
        reading(Source {
            metric: "body.weight",
            number,
            unit,
            scale,
            add,
        })
        .unwrap()
    }

    #[test]
    fn a_number_in_the_canonical_unit_keeps_no_source() {
        let r = weight(65.4, None, 1.0, 0.0);
        assert_eq!((r.value, r.unit.as_str()), (65.4, "kg"));
        assert_eq!((r.source_value, r.source_unit), (None, None));
        assert_eq!(r.quality, Quality::Ok);
        let r = weight(65.4, Some("kg"), 1.0, 0.0);
        assert_eq!((r.source_value, r.source_unit), (None, None));
    }

    #[test]
    fn scaling_keeps_the_number_sent_but_no_unit() {
        let r = weight(654.0, None, 0.1, 0.0);
        assert_eq!(r.value, 65.4);
        assert_eq!((r.source_value, r.source_unit), (Some(654.0), None));
        let r = weight(64.4, None, 1.0, 1.0);
        assert_eq!((r.value, r.source_value), (65.4, Some(64.4)));
    }

    #[test]
    fn conversion_keeps_the_number_before_scale_and_the_unit() {
        let r = weight(1442.0, Some("lb"), 0.1, 0.0);
        assert_eq!(r.value, 65.40802);
        assert_eq!(r.source_value, Some(1442.0));
        assert_eq!(r.source_unit.as_deref(), Some("lb"));
    }

    #[test]
    fn binary_noise_alone_is_not_a_change() {
        // 1442 * 0.1 is 144.20000000000002 in binary floating point.
        let r = weight(1442.0 * 0.1, Some("lb"), 1.0, 0.0);
        assert_eq!(r.source_value, Some(144.2));
        let r = reading(Source::new("vital.rr_interval", 740.0 / 1024.0, Some("s"))).unwrap();
        assert_eq!(
            (r.value, r.source_value, r.source_unit),
            (0.722656, None, None)
        );
    }

    #[test]
    fn implausible_values_are_kept_and_flagged() {
        let r = reading(Source::new("strength.grip", 180.0, None)).unwrap();
        assert_eq!((r.value, r.quality), (180.0, Quality::OutOfRange));
    }

    #[test]
    fn unknown_metrics_units_and_non_finite_numbers_are_errors() {
        assert_eq!(
            reading(Source::new("body.heigth", 1.0, None)),
            Err(NormalizeError::UnknownMetric("body.heigth".into()))
        );
        assert!(matches!(
            reading(Source::new("body.weight", 1.0, Some("furlong"))),
            Err(NormalizeError::Unit(_))
        ));
        assert_eq!(
            reading(Source::new("body.weight", f64::NAN, None)).map_err(|e| e.to_string()),
            Err("NaN is not a finite number".into())
        );
        let huge = Source {
            scale: f64::MAX,
            ..Source::new("body.weight", 10.0, None)
        };
        assert_eq!(reading(huge), Err(NormalizeError::NotFinite(10.0)));
    }
}
