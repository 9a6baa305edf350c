//! Checksums instruments append to their frames.
//!
//! `sum8` and `xor` are one byte; the CRC-16s are two bytes, sent in the
//! byte order a profile states (Modbus sends the low byte first).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumKind {
    /// Sum of the bytes, modulo 256.
    Sum8,
    /// XOR of the bytes (BCC).
    Xor,
    /// CRC-16/MODBUS: poly 0x8005 reflected (0xA001), init 0xFFFF.
    Crc16Modbus,
    /// CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected.
    Crc16Ccitt,
    /// CRC-16/XMODEM: poly 0x1021, init 0x0000.
    Crc16Xmodem,
}

impl ChecksumKind {
    /// Bytes the checksum takes in a binary frame.
    pub fn size(self) -> usize {
        match self {
            ChecksumKind::Sum8 | ChecksumKind::Xor => 1,
            _ => 2,
        }
    }

    pub fn compute(self, bytes: &[u8]) -> u16 {
        match self {
            ChecksumKind::Sum8 => bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)) as u16,
            ChecksumKind::Xor => bytes.iter().fold(0u8, |a, b| a ^ b) as u16,
            ChecksumKind::Crc16Modbus => crc16_reflected(bytes, 0xA001, 0xFFFF),
            ChecksumKind::Crc16Ccitt => crc16_msb(bytes, 0x1021, 0xFFFF),
            ChecksumKind::Crc16Xmodem => crc16_msb(bytes, 0x1021, 0x0000),
        }
    }
}

fn crc16_reflected(bytes: &[u8], poly: u16, init: u16) -> u16 {
    let mut crc = init;
    for &b in bytes {
        crc ^= b as u16;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ poly
            } else {
                crc >> 1
            };
        }
    }
    crc
}

fn crc16_msb(bytes: &[u8], poly: u16, init: u16) -> u16 {
    let mut crc = init;
    for &b in bytes {
        crc ^= (b as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ poly
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Byte order of a multi-byte number on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endian {
    #[default]
    Big,
    Little,
}

/// Reads an unsigned big- or little-endian number of `bytes.len()` bytes.
pub fn read_uint(bytes: &[u8], endian: Endian) -> u64 {
    let fold = |acc: u64, b: &u8| (acc << 8) | *b as u64;
    match endian {
        Endian::Big => bytes.iter().fold(0, fold),
        Endian::Little => bytes.iter().rev().fold(0, fold),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_of_the_catalogue() {
        // The standard "123456789" check values.
        assert_eq!(ChecksumKind::Crc16Modbus.compute(b"123456789"), 0x4B37);
        assert_eq!(ChecksumKind::Crc16Ccitt.compute(b"123456789"), 0x29B1);
        assert_eq!(ChecksumKind::Crc16Xmodem.compute(b"123456789"), 0x31C3);
        assert_eq!(ChecksumKind::Xor.compute(&[0x91]), 0x91);
        assert_eq!(ChecksumKind::Sum8.compute(&[0xFF, 0x02]), 0x01);
    }

    #[test]
    fn modbus_request_crc_matches_the_reference_frame() {
        // 01 03 00 00 00 02 C4 0B: CRC sent low byte first.
        let crc = ChecksumKind::Crc16Modbus.compute(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x02]);
        assert_eq!(crc.to_le_bytes(), [0xC4, 0x0B]);
    }

    #[test]
    fn uints_in_both_orders() {
        assert_eq!(read_uint(&[0x12, 0x34], Endian::Big), 0x1234);
        assert_eq!(read_uint(&[0x12, 0x34], Endian::Little), 0x3412);
        assert_eq!(read_uint(&[1, 2, 3], Endian::Big), 0x010203);
    }
}
