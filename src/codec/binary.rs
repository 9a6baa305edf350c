//! Number formats instruments put in binary frames: integers of 8 to 32
//! bits, packed BCD, IEEE-754, and the IEEE-11073 SFLOAT/FLOAT used by
//! Bluetooth health devices (whose special values mean "no data").

use serde::Deserialize;

use super::checksum::{read_uint, Endian};

/// A binary field's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BinType {
    U8,
    I8,
    U16,
    I16,
    U24,
    I24,
    U32,
    I32,
    F32,
    F64,
    /// Packed BCD, two digits a byte, `length` bytes.
    Bcd,
    /// IEEE-11073 16-bit SFLOAT.
    Sfloat,
    /// IEEE-11073 32-bit FLOAT.
    Float,
    /// ASCII text of `length` bytes (padding spaces and NULs trimmed).
    Ascii,
    /// UTF-16 little-endian text of `length` bytes (e.g. ID-card readers).
    Utf16le,
}

impl BinType {
    /// Bytes the field takes; `None` when `length` must say.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            BinType::U8 | BinType::I8 => 1,
            BinType::U16 | BinType::I16 | BinType::Sfloat => 2,
            BinType::U24 | BinType::I24 => 3,
            BinType::U32 | BinType::I32 | BinType::F32 | BinType::Float => 4,
            BinType::F64 => 8,
            BinType::Bcd | BinType::Ascii | BinType::Utf16le => return None,
        })
    }

    pub fn is_text(self) -> bool {
        matches!(self, BinType::Ascii | BinType::Utf16le)
    }
}

/// A value read from bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum BinValue {
    Number(f64),
    Text(String),
    /// A special value meaning "not available" (SFLOAT/FLOAT NaN, NRes, ...).
    Absent,
}

/// Why bytes could not be read as the declared type.
#[derive(Debug, Clone, PartialEq)]
pub enum BinError {
    /// A BCD nibble above 9.
    BadBcd(u8),
    /// Text that is not valid in its encoding.
    BadText,
}

/// Packed BCD as its digit string, leading zeros kept (an id on a card).
pub fn bcd_digits(bytes: &[u8], endian: Endian) -> Result<String, BinError> {
    let mut digits = String::with_capacity(bytes.len() * 2);
    let mut push = |b: u8| {
        for nibble in [b >> 4, b & 0x0F] {
            if nibble > 9 {
                return Err(BinError::BadBcd(b));
            }
            digits.push(char::from(b'0' + nibble));
        }
        Ok(())
    };
    match endian {
        Endian::Big => bytes.iter().try_for_each(|b| push(*b))?,
        Endian::Little => bytes.iter().rev().try_for_each(|b| push(*b))?,
    }
    Ok(digits)
}

/// Reads `bytes` (exactly the field's size) as `kind`.
pub fn read(bytes: &[u8], kind: BinType, endian: Endian) -> Result<BinValue, BinError> {
    let uint = || read_uint(bytes, endian);
    let signed = |bits: u32| {
        let v = uint() as i64;
        let shift = 64 - bits;
        ((v << shift) >> shift) as f64
    };
    let number = match kind {
        BinType::U8 | BinType::U16 | BinType::U24 | BinType::U32 => uint() as f64,
        BinType::I8 => signed(8),
        BinType::I16 => signed(16),
        BinType::I24 => signed(24),
        BinType::I32 => signed(32),
        BinType::F32 => f32::from_bits(uint() as u32) as f64,
        BinType::F64 => f64::from_bits(uint()),
        // A number this long loses digits in an f64 but cannot overflow;
        // an id in BCD is read as its digits instead (`bcd_digits`).
        BinType::Bcd => bcd_digits(bytes, endian)?
            .bytes()
            .fold(0.0, |v, d| v * 10.0 + (d - b'0') as f64),
        BinType::Sfloat => return Ok(sfloat(uint() as u16)),
        BinType::Float => return Ok(float(uint() as u32)),
        BinType::Ascii => {
            let text = std::str::from_utf8(bytes).map_err(|_| BinError::BadText)?;
            return Ok(BinValue::Text(
                text.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string(),
            ));
        }
        BinType::Utf16le => {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            let text = String::from_utf16(&units).map_err(|_| BinError::BadText)?;
            return Ok(BinValue::Text(
                text.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string(),
            ));
        }
    };
    if number.is_finite() {
        Ok(BinValue::Number(number))
    } else {
        Ok(BinValue::Absent)
    }
}

/// IEEE-11073 SFLOAT: 4-bit signed exponent, 12-bit signed mantissa.
/// NaN (0x07FF), NRes (0x0800), +/-INF (0x07FE, 0x0802) and the reserved
/// 0x0801 are "no data".
pub fn sfloat(raw: u16) -> BinValue {
    // 0x07FE +INF, 0x07FF NaN, 0x0800 NRes, 0x0801 reserved, 0x0802 -INF
    if (0x07FE..=0x0802).contains(&raw) {
        return BinValue::Absent;
    }
    let mantissa = ((raw & 0x0FFF) as i16) << 4 >> 4;
    let exponent = (raw as i16) >> 12;
    BinValue::Number(mantissa as f64 * 10f64.powi(exponent as i32))
}

/// IEEE-11073 FLOAT: 8-bit signed exponent, 24-bit signed mantissa, with
/// the special values 0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002,
/// 0x00800001.
pub fn float(raw: u32) -> BinValue {
    // 0x007FFFFE +INF, 0x007FFFFF NaN, 0x00800000 NRes, 0x00800001 reserved, 0x00800002 -INF
    if (0x007F_FFFE..=0x0080_0002).contains(&raw) {
        return BinValue::Absent;
    }
    let mantissa = ((raw & 0x00FF_FFFF) as i32) << 8 >> 8;
    let exponent = (raw as i32) >> 24;
    BinValue::Number(mantissa as f64 * 10f64.powi(exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(bytes: &[u8], kind: BinType, endian: Endian) -> f64 {
        match read(bytes, kind, endian).unwrap() {
            BinValue::Number(n) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn integers_signed_and_unsigned_in_both_orders() {
        assert_eq!(num(&[0xFF, 0xD6], BinType::I16, Endian::Big), -42.0);
        assert_eq!(num(&[0xFF, 0xD6], BinType::U16, Endian::Big), 65494.0);
        assert_eq!(num(&[0x6E, 0x14], BinType::U16, Endian::Little), 5230.0);
        assert_eq!(num(&[0xFF, 0xFF, 0xFE], BinType::I24, Endian::Big), -2.0);
        assert_eq!(num(&[0x01, 0x00, 0x00], BinType::U24, Endian::Little), 1.0);
        assert_eq!(num(&[0x80], BinType::I8, Endian::Big), -128.0);
        assert_eq!(
            num(&[0xFF, 0xFF, 0xFF, 0xFF], BinType::I32, Endian::Big),
            -1.0
        );
    }

    #[test]
    fn bcd_and_ieee() {
        assert_eq!(num(&[0x01, 0x72, 0x50], BinType::Bcd, Endian::Big), 17250.0);
        assert_eq!(
            read(&[0x1A], BinType::Bcd, Endian::Big),
            Err(BinError::BadBcd(0x1A))
        );
        assert_eq!(num(&1.5f32.to_be_bytes(), BinType::F32, Endian::Big), 1.5);
        assert_eq!(
            num(&2.25f64.to_le_bytes(), BinType::F64, Endian::Little),
            2.25
        );
        assert_eq!(
            read(&f32::NAN.to_be_bytes(), BinType::F32, Endian::Big).unwrap(),
            BinValue::Absent
        );
    }

    #[test]
    fn sfloat_values_and_specials() {
        // 0xF2D0: exponent -1, mantissa 0x2D0 = 720 -> 72.0
        assert_eq!(sfloat(0xF2D0), BinValue::Number(72.0));
        // negative mantissa: 0x0FFF = -1
        assert_eq!(sfloat(0x0FFF), BinValue::Number(-1.0));
        for special in [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801] {
            assert_eq!(sfloat(special), BinValue::Absent);
        }
    }

    #[test]
    fn float_values_and_specials() {
        // exponent -2, mantissa 3650 -> 36.5
        assert_eq!(float(0xFE00_0E42), BinValue::Number(36.5));
        assert_eq!(float(0x007F_FFFF), BinValue::Absent);
    }

    #[test]
    fn text_fields_are_trimmed() {
        assert_eq!(
            read(b"AB  \0", BinType::Ascii, Endian::Big).unwrap(),
            BinValue::Text("AB".into())
        );
        let utf16: Vec<u8> = "11010519"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert_eq!(
            read(&utf16, BinType::Utf16le, Endian::Big).unwrap(),
            BinValue::Text("11010519".into())
        );
    }
}
