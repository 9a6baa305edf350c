//! Who was measured: subject ids as scanned or typed become keyed
//! pseudonyms here, and nowhere else.
//!
//! A subject id (a resident ID number, a member number) is checked
//! ([`check`]), normalized, and replaced by
//! `psn1:` + hex `HMAC-SHA256(site key, normalized id)` ([`Keyring`]).
//! The raw id lives only in the decoder's stack frame: it is never stored,
//! logged, shown in status or sent. A scan that fails its check is shown by
//! the kind of failure and a short keyed fingerprint ([`Keyring::fingerprint`]),
//! never by its text.

pub mod check;

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use check::{IdCheck, IdProblem};

/// The documented prefix of every pseudonym: version 1, HMAC-SHA256.
pub const PREFIX: &str = "psn1:";

/// Bytes a key file must hold at least.
pub const MIN_KEY_BYTES: usize = 16;

/// A secret key; its bytes are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from its bytes; `None` when shorter than [`MIN_KEY_BYTES`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Option<Key> {
        let bytes = bytes.into();
        (bytes.len() >= MIN_KEY_BYTES).then_some(Key(bytes))
    }

    /// Reads a key file: its content without surrounding whitespace. The
    /// file must be readable by its owner only.
    pub fn read(path: &Path) -> Result<Key, KeyFileError> {
        let bytes = crate::secret::read(path)?;
        let trimmed = bytes.trim_ascii();
        Key::new(trimmed).ok_or(KeyFileError::Short(trimmed.len()))
    }

    fn mac(&self, domain: &[u8], text: &str) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(domain);
        mac.update(text.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Why a key file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFileError {
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    #[error("it holds {0} bytes; a key needs at least {MIN_KEY_BYTES}")]
    Short(usize),
}

/// The site key, and during a changeover the previous one.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub current: Key,
    pub previous: Option<Key>,
}

/// A subject as it leaves the decoder: its pseudonym under the current key
/// and, during a key changeover, under the previous one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pseudonym {
    pub current: String,
    pub previous: Option<String>,
}

impl Keyring {
    pub fn new(current: Key) -> Keyring {
        Keyring {
            current,
            previous: None,
        }
    }

    /// The key the offline tools (`fitedge profile test`, `fitedge decode`)
    /// use, so technicians can compare pseudonyms without the site key.
    /// Never used by a running gateway.
    pub fn for_tests() -> Keyring {
        Keyring::new(Key(b"fitedge-profile-test-key".to_vec()))
    }

    /// The pseudonyms of an id already checked and normalized.
    pub fn pseudonym(&self, normalized: &str) -> Pseudonym {
        let one = |key: &Key| format!("{PREFIX}{}", lower_hex(&key.mac(b"", normalized)));
        Pseudonym {
            current: one(&self.current),
            previous: self.previous.as_ref().map(one),
        }
    }

    /// A short keyed fingerprint of text that failed its check, so that
    /// repeated bad scans of one card can be told apart in the log without
    /// showing the text.
    pub fn fingerprint(&self, text: &str) -> String {
        lower_hex(&self.current.mac(b"fingerprint\0", text)[..4])
    }
}

/// Whether `text` is a pseudonym as this module makes them (`psn1:` and 64
/// lower-case hex digits).
pub fn is_pseudonym(text: &str) -> bool {
    text.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn lower_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretError;

    #[test]
    fn pseudonyms_are_hmac_sha256_with_the_documented_prefix() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let ring = Keyring::new(Key(b"Jefe".to_vec()));
        assert_eq!(
            ring.pseudonym("what do ya want for nothing?").current,
            "psn1:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_previous_key_gives_a_second_pseudonym_and_keys_differ() {
        let a = Key::new(*b"0123456789abcdef").unwrap();
        let b = Key::new(*b"fedcba9876543210").unwrap();
        let ring = Keyring {
            current: a.clone(),
            previous: Some(b.clone()),
        };
        let p = ring.pseudonym("11010519491231002X");
        assert_eq!(
            p.current,
            Keyring::new(a).pseudonym("11010519491231002X").current
        );
        assert_eq!(
            p.previous.as_deref(),
            Some(
                Keyring::new(b)
                    .pseudonym("11010519491231002X")
                    .current
                    .as_str()
            )
        );
        assert_ne!(Some(p.current.clone()), p.previous);
        assert!(!p.current.contains("1101"));
        assert_eq!(ring.fingerprint("x").len(), 8);
        assert_ne!(ring.fingerprint("x"), ring.fingerprint("y"));
        assert_eq!(format!("{ring:?}").matches("Key(..)").count(), 2);
    }

    #[test]
    fn key_files_must_be_private_non_empty_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("0123456789abcdef0123\n", 0o600);
        assert_eq!(
            Key::read(&path).unwrap(),
            Key::new(*b"0123456789abcdef0123").unwrap()
        );
        write("0123456789abcdef0123\n", 0o644);
        assert_eq!(
            Key::read(&path),
            Err(KeyFileError::Secret(SecretError::TooOpen(0o644)))
        );
        write(" \n", 0o600);
        assert_eq!(
            Key::read(&path),
            Err(KeyFileError::Secret(SecretError::Empty))
        );
        write("short", 0o400);
        assert_eq!(Key::read(&path), Err(KeyFileError::Short(5)));
        assert!(matches!(
            Key::read(&dir.path().join("missing")),
            Err(KeyFileError::Secret(SecretError::Unreadable(_)))
        ));
    }
}
