//! Secret files: passwords, the LAN accounts, pseudonym keys and TLS
//! private keys.
//!
//! A secret is read only from a file (or a systemd credential, which is a
//! file), never from the config or the command line. The file must be a
//! regular file readable by its owner only, hold something, and be small:
//! a FIFO, `/dev/zero` or a world-readable copy is refused with what to do.
//! Every other file the gateway reads goes through the same bounded,
//! non-blocking read ([`read_file`]).

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
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
}

impl SecretError {
    /// What to do about it, for `path`.
    pub fn fix(&self, path: &Path) -> String {
        match self {
            SecretError::TooOpen(_) => format!("chmod 600 {}", path.display()),
            SecretError::Empty => format!("write the secret into {} (mode 0600)", path.display()),
            SecretError::NotAFile | SecretError::TooLarge(_) => {
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
    let bytes = read_regular(path, MAX_SECRET_BYTES, private)?;
    if bytes.trim_ascii().is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(bytes)
}

/// The largest config or profile file read.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads any other file the gateway is given (a config, a profile, saved
/// sessions, a capture) the same bounded way, whatever its mode: a FIFO or
/// `/dev/zero` named by mistake is refused, not read forever.
pub fn read_file(path: &Path, max: u64) -> Result<Vec<u8>, SecretError> {
    read_regular(path, max, |_, _| true)
}

/// Reads a regular file of at most `max` bytes that `allowed` accepts
/// (given the open file and its mode; `TooOpen` otherwise). It is opened
/// non-blocking, so a FIFO does not wait for a writer, and the checks are
/// made on what was opened, not on the path again. Certificate files are
/// read this way too, with a looser `allowed`.
pub fn read_regular(
    path: &Path,
    max: u64,
    allowed: impl FnOnce(&std::fs::File, u32) -> bool,
) -> Result<Vec<u8>, SecretError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let unreadable = |e: std::io::Error| SecretError::Unreadable(e.to_string());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    let meta = file.metadata().map_err(unreadable)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile);
    }
    let mode = meta.permissions().mode() & 0o777;
    if !allowed(&file, mode) {
        return Err(SecretError::TooOpen(mode));
    }
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max {
        return Err(SecretError::TooLarge(max));
    }
    Ok(bytes)
}

/// Whether only the owner, and this process's user, can read the file.
/// With a POSIX ACL the group bits of `mode` are the ACL's mask, not a
/// group's access: systemd hands a credential to the service's user as a
/// root-owned 0400 file with an ACL entry for that user (mode shows 0440),
/// and an installer may do the same with `setfacl -m u:fitedge:r`.
fn private(file: &std::fs::File, mode: u32) -> bool {
    if mode & 0o077 == 0 {
        return true;
    }
    if mode & 0o007 != 0 {
        return false;
    }
    let Some(entries) = access_acl(file) else {
        return false;
    };
    // Tags of Linux's xattr ACL format (linux/posix_acl_xattr.h).
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const GROUP: u16 = 0x08;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    let mask = (entries.iter()).find(|e| e.0 == MASK).map_or(0o7, |e| e.1);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    entries.iter().all(|&(tag, perm, id)| match tag {
        OTHER => perm == 0,
        GROUP_OBJ | GROUP => perm & mask == 0,
        USER => id == me || perm & mask == 0,
        _ => true,
    })
}

/// The file's access ACL as (tag, permissions, id) entries; `None` when it
/// has none.
fn access_acl(file: &std::fs::File) -> Option<Vec<(u16, u16, u32)>> {
    use std::os::fd::AsRawFd;
    let name = c"system.posix_acl_access";
    let mut buf = [0u8; 1024];
    // SAFETY: the buffer outlives the call and its length is passed.
    let len = unsafe {
        libc::fgetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let body = buf.get(4..usize::try_from(len).ok()?)?;
    let entries = body
        .chunks_exact(8)
        .map(|e| {
            (
                u16::from_le_bytes([e[0], e[1]]),
                u16::from_le_bytes([e[2], e[3]]),
                u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            )
        })
        .collect();
    Some(entries)
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

    /// Sets an access ACL on `path`: (tag, perm, id) entries. `false` where
    /// the filesystem has no ACLs.
    fn set_acl(path: &Path, entries: &[(u16, u16, u32)]) -> bool {
        let mut blob = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            blob.extend_from_slice(&tag.to_le_bytes());
            blob.extend_from_slice(&perm.to_le_bytes());
            blob.extend_from_slice(&id.to_le_bytes());
        }
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C strings and a buffer with its length.
        let rc = unsafe {
            libc::setxattr(
                c.as_ptr(),
                c"system.posix_acl_access".as_ptr(),
                blob.as_ptr().cast(),
                blob.len(),
                0,
            )
        };
        rc == 0
    }

    /// A systemd credential: root's 0400 file with an ACL entry granting
    /// the service's user read access (mode then shows 0440).
    #[test]
    fn a_credential_readable_through_an_acl_by_this_user_only_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream.password");
        write(&path, "s3cret\n", 0o400);
        // SAFETY: no preconditions.
        let me = unsafe { libc::geteuid() };
        // user_obj r, a named user r, group_obj as given, mask r, other none.
        let acl = |user: u32, group: u16| {
            [
                (0x01, 4, u32::MAX),
                (0x02, 4, user),
                (0x04, group, u32::MAX),
                (0x10, 4, u32::MAX),
                (0x20, 0, u32::MAX),
            ]
        };
        if !set_acl(&path, &acl(me, 0)) {
            eprintln!("SKIPPED: this filesystem has no POSIX ACLs");
            return;
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o440, "the mask shows in the group bits");
        assert_eq!(read_password(&path).unwrap(), "s3cret");
        // Another user in the ACL, or the owning group, makes it open.
        assert!(set_acl(&path, &acl(me.wrapping_add(1), 0)));
        assert_eq!(read(&path), Err(SecretError::TooOpen(0o440)));
        assert!(set_acl(&path, &acl(me, 4)));
        assert_eq!(read(&path), Err(SecretError::TooOpen(0o440)));
    }

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
        assert_eq!(read(&path), Err(SecretError::TooLarge(MAX_SECRET_BYTES)));
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
