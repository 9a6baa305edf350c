//! Secret files: passwords, the LAN accounts, pseudonym keys and TLS
//! private keys.
//!
//! A secret is read only from a file (or a systemd credential, which is a
//! file), never from the config or the command line. The file must be a
//! regular file readable by its owner only, hold something, and be small:
//! a FIFO, `/dev/zero` or a world-readable copy is refused with what to do.

use std::io::Read;
use std::path::Path;

/// The largest secret file read (a users file of a few thousand accounts).
pub const MAX_SECRET_BYTES: u64 = 256 * 1024;

/// Why a secret file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it is readable by group or others (mode {0:o})")]
    TooOpen(u32),
    #[error("it is empty")]
    Empty,
    #[error("it is larger than {MAX_SECRET_BYTES} bytes")]
    TooLarge,
}

impl SecretError {
    /// What to do about it, for `path`.
    pub fn fix(&self, path: &Path) -> String {
        match self {
            SecretError::TooOpen(_) => format!("chmod 600 {}", path.display()),
            SecretError::Empty => format!("write the secret into {} (mode 0600)", path.display()),
            SecretError::NotAFile | SecretError::TooLarge => {
                format!(
                    "name a regular file of the secret alone, mode 0600, instead of {}",
                    path.display()
                )
            }
            SecretError::Unreadable(_) => format!(
                "create {} (mode 0600, owned by the user the gateway runs as) or correct the path",
                path.display()
            ),
        }
    }
}

/// Reads a secret file whole. Whitespace around the content does not
/// count: a file of blanks and line ends is empty.
pub fn read(path: &Path) -> Result<Vec<u8>, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    // Metadata first: opening a FIFO would wait for a writer.
    let meta = std::fs::metadata(path).map_err(|e| SecretError::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile);
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen(mode));
    }
    let file = std::fs::File::open(path).map_err(|e| SecretError::Unreadable(e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| SecretError::Unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge);
    }
    if bytes.trim_ascii().is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(bytes)
}

/// A password file's content: its first line, without the line end.
pub fn read_password(path: &Path) -> Result<String, SecretError> {
    let bytes = read(path)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| SecretError::Unreadable("it is not UTF-8 text".into()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.trim().is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_secret_is_a_small_private_regular_file_with_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream.password");
        write(&path, "s3cret\n", 0o600);
        assert_eq!(read_password(&path).unwrap(), "s3cret");
        write(&path, "s3cret\r\n", 0o400);
        assert_eq!(read_password(&path).unwrap(), "s3cret");
        write(&path, "s3cret\n", 0o644);
        assert_eq!(read_password(&path), Err(SecretError::TooOpen(0o644)));
        assert_eq!(
            SecretError::TooOpen(0o644).fix(&path),
            format!("chmod 600 {}", path.display())
        );
        write(&path, "s3cret\n", 0o640);
        assert_eq!(read_password(&path), Err(SecretError::TooOpen(0o640)));
        write(&path, "", 0o600);
        assert_eq!(read_password(&path), Err(SecretError::Empty));
        write(&path, "  \n\t\n", 0o600);
        assert_eq!(read_password(&path), Err(SecretError::Empty));
        write(&path, &"x".repeat(MAX_SECRET_BYTES as usize + 1), 0o600);
        assert_eq!(read(&path), Err(SecretError::TooLarge));
        assert!(matches!(
            read(&dir.path().join("missing")),
            Err(SecretError::Unreadable(_))
        ));
        assert_eq!(read(dir.path()), Err(SecretError::NotAFile));
        assert_eq!(read(Path::new("/dev/zero")), Err(SecretError::NotAFile));
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fifo");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(read(&path), Err(SecretError::NotAFile));
    }
}
