//! Unit conversion from a device's own unit to the canonical UCUM unit.
//!
//! Only conversions that instruments on the programme's stations actually
//! need are listed; each is linear (`canonical = value * factor + offset`).

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq)]
#[error(
    "no conversion from unit \"{from}\" to \"{to}\"; use the canonical unit or one of: {known}"
)]
pub struct UnitError {
    pub from: String,
    pub to: String,
    pub known: String,
}

/// (from, to, factor, offset), with UCUM codes and a few common spellings.
const CONVERSIONS: &[(&str, &str, f64, f64)] = &[
    ("g", "kg", 0.001, 0.0),
    ("[lb_av]", "kg", 0.453_592_37, 0.0),
    ("lb", "kg", 0.453_592_37, 0.0),
    ("mm", "cm", 0.1, 0.0),
    ("m", "cm", 100.0, 0.0),
    ("[in_i]", "cm", 2.54, 0.0),
    ("in", "cm", 2.54, 0.0),
    ("km", "m", 1000.0, 0.0),
    ("cm", "m", 0.01, 0.0),
    ("L", "mL", 1000.0, 0.0),
    ("ms", "s", 0.001, 0.0),
    ("min", "s", 60.0, 0.0),
    ("kPa", "mm[Hg]", 7.500_615_75, 0.0),
    ("[degF]", "Cel", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("degF", "Cel", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    ("kJ", "kcal", 1.0 / 4.184, 0.0),
    ("kJ/d", "kcal/d", 1.0 / 4.184, 0.0),
    ("m/s", "km/h", 3.6, 0.0),
    ("[mi_i]/h", "km/h", 1.609_344, 0.0),
    ("mph", "km/h", 1.609_344, 0.0),
    ("[mi_i]", "m", 1609.344, 0.0),
    ("mi", "m", 1609.344, 0.0),
    ("N", "kg", 1.0 / 9.806_65, 0.0),
    ("daN", "kg", 10.0 / 9.806_65, 0.0),
];

/// Converts `value` from unit `from` to unit `to`.
pub fn convert(value: f64, from: &str, to: &str) -> Result<f64, UnitError> {
    if from == to {
        return Ok(value);
    }
    factor(from, to)
        .map(|(f, o)| value * f + o)
        .ok_or_else(|| UnitError {
            from: from.to_string(),
            to: to.to_string(),
            known: known_sources(to).join(", "),
        })
}

/// Rounds away binary noise from scaling (0.1 * 3 is 0.3).
pub fn round(v: f64) -> f64 {
    if !(v * 1e6).is_finite() {
        return v;
    }
    let r = (v * 1e6).round() / 1e6;
    if r == 0.0 {
        0.0
    } else {
        r
    }
}

/// Whether `from` can be converted to `to`.
pub fn convertible(from: &str, to: &str) -> Result<(), UnitError> {
    convert(0.0, from, to).map(|_| ())
}

fn factor(from: &str, to: &str) -> Option<(f64, f64)> {
    CONVERSIONS
        .iter()
        .find(|(f, t, _, _)| *f == from && *t == to)
        .map(|(_, _, factor, offset)| (*factor, *offset))
}

fn known_sources(to: &str) -> Vec<String> {
    let mut known = vec![to.to_string()];
    known.extend(
        CONVERSIONS
            .iter()
            .filter(|(_, t, _, _)| *t == to)
            .map(|(f, _, _, _)| f.to_string()),
    );
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn converts_device_units_to_canonical() {
        assert!(close(convert(100.0, "lb", "kg").unwrap(), 45.359237));
        assert!(close(convert(10.0, "in", "cm").unwrap(), 25.4));
        assert!(close(convert(1.725, "m", "cm").unwrap(), 172.5));
        assert!(close(convert(212.0, "[degF]", "Cel").unwrap(), 100.0));
        assert!(close(convert(16.0, "kPa", "mm[Hg]").unwrap(), 120.009852));
        assert!(close(convert(4.184, "kJ", "kcal").unwrap(), 1.0));
        assert!(close(convert(3.45, "L", "mL").unwrap(), 3450.0));
        assert!(close(convert(72.5, "cm", "cm").unwrap(), 72.5));
    }

    #[test]
    fn unknown_conversion_names_the_alternatives() {
        let err = convert(1.0, "furlong", "cm").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("furlong") && text.contains("[in_i]"),
            "{text}"
        );
    }
}
