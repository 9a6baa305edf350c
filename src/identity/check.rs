//! Checks a subject id must pass before it becomes a pseudonym: the
//! structure of a Chinese resident identity number (GB 11643), or a pattern
//! for other kinds of id (a platform member number).

use chrono::{Datelike, NaiveDate};

/// How a subject id is checked.
#[derive(Debug, Clone)]
pub enum IdCheck {
    /// 18 characters: a region code, a birth date, a sequence number and an
    /// ISO 7064 MOD 11-2 check character (`X` for 10).
    CnResidentId,
    /// The whole id matches the pattern.
    Pattern(regex::Regex),
    /// Printable, without spaces, 1 to 64 characters.
    Any,
}

/// Why a subject id was refused; says what is wrong without quoting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdProblem {
    #[error("wrong length for a resident ID number")]
    Length,
    #[error("characters a resident ID number cannot hold")]
    Characters,
    #[error("no such region code")]
    Region,
    #[error("the birth date is not a real date")]
    BirthDate,
    #[error("the birth date is in the future")]
    FutureBirth,
    #[error("wrong check digit")]
    CheckDigit,
    #[error("does not match the id pattern")]
    Pattern,
}

impl IdProblem {
    /// A short snake_case name, for records and counters.
    pub fn code(self) -> &'static str {
        match self {
            IdProblem::Length => "length",
            IdProblem::Characters => "characters",
            IdProblem::Region => "region",
            IdProblem::BirthDate => "birth_date",
            IdProblem::FutureBirth => "future_birth",
            IdProblem::CheckDigit => "check_digit",
            IdProblem::Pattern => "pattern",
        }
    }
}

/// ISO 7064 MOD 11-2: the weight of each of the 17 digits, and the check
/// character for each remainder of their weighted sum.
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: &[u8; 11] = b"10X98765432";

/// Province-level codes: the first two digits of a region code.
const PROVINCES: &[u8] = &[
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82, 83,
];

impl IdCheck {
    /// Normalizes `text` (trimmed; a resident ID number upper-cased, so `x`
    /// and `X` are one person) and checks it. `today` bounds birth dates;
    /// `None` when the clock is not trusted.
    pub fn normalize(&self, text: &str, today: Option<NaiveDate>) -> Result<String, IdProblem> {
        let text = text.trim();
        match self {
            IdCheck::CnResidentId => {
                let id = text.to_ascii_uppercase();
                cn_resident_id(&id, today).map(|()| id)
            }
            IdCheck::Pattern(re) => {
                let whole = re.find(text).is_some_and(|m| m.len() == text.len());
                if whole {
                    Ok(text.to_string())
                } else {
                    Err(IdProblem::Pattern)
                }
            }
            IdCheck::Any => {
                let ok = (1..=64).contains(&text.chars().count())
                    && text.chars().all(|c| !c.is_control() && !c.is_whitespace());
                if ok {
                    Ok(text.to_string())
                } else {
                    Err(IdProblem::Pattern)
                }
            }
        }
    }
}

/// Checks an upper-case 18-character resident identity number.
pub fn cn_resident_id(id: &str, today: Option<NaiveDate>) -> Result<(), IdProblem> {
    let b = id.as_bytes();
    if b.len() != 18 {
        return Err(IdProblem::Length);
    }
    if !b[..17].iter().all(u8::is_ascii_digit) || !(b[17].is_ascii_digit() || b[17] == b'X') {
        return Err(IdProblem::Characters);
    }
    let digits = |r: std::ops::Range<usize>| id[r].parse::<u32>().unwrap_or(0);
    let province = digits(0..2) as u8;
    if !PROVINCES.contains(&province) || digits(2..6) == 0 {
        return Err(IdProblem::Region);
    }
    let birth = NaiveDate::from_ymd_opt(digits(6..10) as i32, digits(10..12), digits(12..14))
        .filter(|d| d.year() >= 1900)
        .ok_or(IdProblem::BirthDate)?;
    if today.is_some_and(|t| birth > t) {
        return Err(IdProblem::FutureBirth);
    }
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| (d - b'0') as u32 * w)
        .sum();
    if CHECK[(sum % 11) as usize] != b[17] {
        return Err(IdProblem::CheckDigit);
    }
    Ok(())
}

/// A made-up resident ID number with a correct check digit, for the demo
/// and the tests: region, birth date and sequence as given.
pub fn make_cn_resident_id(region: &str, birth: &str, sequence: &str) -> String {
    let body = format!("{region}{birth}{sequence}");
    let sum: u32 = body
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| d.wrapping_sub(b'0') as u32 * w)
        .sum();
    format!("{body}{}", CHECK[(sum % 11) as usize] as char)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(2026, 12, 2)
    }

    #[test]
    fn the_standards_example_passes_and_each_kind_of_damage_is_named() {
        let check = IdCheck::CnResidentId;
        assert_eq!(
            check.normalize(" 11010519491231002x ", today()).as_deref(),
            Ok("11010519491231002X")
        );
        let cases = [
            ("1101051949123100", IdProblem::Length),
            ("11010519491231002Y", IdProblem::Characters),
            ("1101A519491231002X", IdProblem::Characters),
            ("99010519491231002X", IdProblem::Region),
            ("110000194912310020", IdProblem::Region),
            ("110105194902300020", IdProblem::BirthDate),
            ("110105180001010020", IdProblem::BirthDate),
            ("110105203001010020", IdProblem::FutureBirth),
            ("110105194912310020", IdProblem::CheckDigit),
        ];
        for (id, want) in cases {
            let got = check.normalize(id, today());
            assert_eq!(got, Err(want), "{id}");
            assert!(!want.to_string().contains(id));
        }
        // Without a trusted clock a future date cannot be told.
        let future = make_cn_resident_id("110105", "20300101", "002");
        assert!(check.normalize(&future, None).is_ok());
        assert_eq!(
            check.normalize(&future, today()),
            Err(IdProblem::FutureBirth)
        );
    }

    #[test]
    fn made_up_ids_pass_and_every_single_digit_change_is_caught() {
        let id = make_cn_resident_id("330106", "19880512", "317");
        assert!(cn_resident_id(&id, today()).is_ok(), "{id}");
        for i in 14..17 {
            let mut b = id.clone().into_bytes();
            b[i] = b'0' + (b[i] - b'0' + 1) % 10;
            let changed = String::from_utf8(b).unwrap();
            assert_eq!(
                cn_resident_id(&changed, today()),
                Err(IdProblem::CheckDigit)
            );
        }
    }

    #[test]
    fn other_ids_match_their_pattern_whole() {
        let member = IdCheck::Pattern(regex::Regex::new("M[0-9]{8}").unwrap());
        assert_eq!(
            member.normalize("M12345678", None).as_deref(),
            Ok("M12345678")
        );
        assert_eq!(
            member.normalize("XM12345678", None),
            Err(IdProblem::Pattern)
        );
        assert_eq!(member.normalize("M1234567", None), Err(IdProblem::Pattern));
        assert_eq!(
            IdCheck::Any.normalize("S0001", None).as_deref(),
            Ok("S0001")
        );
        assert_eq!(IdCheck::Any.normalize("a b", None), Err(IdProblem::Pattern));
    }
}
