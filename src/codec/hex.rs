//! Hex text: bytes as uppercase hex for logs and messages, and the hex a
//! technician writes in a profile or on the command line parsed back.

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
            clean
                .get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "\"{}\" at digit {} is not hex",
                        clean.get(i..i + 2).unwrap_or("?"),
                        i
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_parsing_accepts_common_spellings() {
        assert_eq!(parse_hex("02 47 0x03").unwrap(), vec![2, 0x47, 3]);
        assert!(parse_hex("0G").is_err());
        assert!(parse_hex("123").is_err());
        assert!(parse_hex("é1").is_err());
        assert_eq!(hex(&[0xAB, 0x01]), "AB01");
    }
}
