//! Secrets read from files: one way to read them and one permission rule, for every backend and
//! the forwarding token.
//!
//! A secret file holds one line (a trailing line break is not part of it). Errors name the file
//! and the setting, never the content. The permission rule: a secret file must not be readable by
//! every user, nor writable by anyone but its owner (`mode & 0o026 == 0`). Group read is allowed:
//! the installer's `nut.pass` is `0640 root:nut`. A file that breaks the rule is still used
//! (refusing it would turn a permissions slip into a failed shutdown) but said loudly, once per
//! read.

use std::path::Path;

use crate::error::{BackendError, ErrorKind};

/// Mode bits a secret file must not have: read by others, write by group or others.
pub const EXPOSING_MODE_BITS: u32 = 0o026;

/// Reads a one-line secret. `what` names the setting (`password_file`, `token_file`, ...).
pub fn read_secret_line(path: &Path, what: &str) -> Result<String, BackendError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("cannot read {what} {shown}"), e))?;
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.is_empty() {
        return Err(BackendError::new(ErrorKind::Config, format!("{what} {shown} is empty")));
    }
    if line.contains(['\n', '\r', '\0']) {
        return Err(BackendError::new(
            ErrorKind::Config,
            format!("{what} {shown} holds more than one line; it takes a single line"),
        ));
    }
    warn_if_exposed(path, what);
    Ok(line.to_owned())
}

/// Whether a file's mode breaks the rule (see the module doc); `None` if it cannot be read.
pub fn is_exposed(path: &Path) -> Option<bool> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).ok().map(|m| m.permissions().mode() & EXPOSING_MODE_BITS != 0)
}

/// Logs a warning when a secret file breaks the permission rule.
pub fn warn_if_exposed(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if is_exposed(path) == Some(true) {
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or_default();
        tracing::warn!(
            file = %path.display(),
            mode = format!("{mode:o}"),
            "{what} is readable by every user or writable by others; chmod 600 (or 640 for a group that needs it)"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn one_line_is_read_and_bad_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "hunter2\n").unwrap();
        assert_eq!(read_secret_line(&p, "password_file").unwrap(), "hunter2");
        std::fs::write(&p, "hunter2\r\n").unwrap();
        assert_eq!(read_secret_line(&p, "password_file").unwrap(), "hunter2");
        std::fs::write(&p, "").unwrap();
        let e = read_secret_line(&p, "password_file").unwrap_err();
        assert!(e.message.contains("is empty") && e.message.contains("password_file"), "{e}");
        std::fs::write(&p, "first-half\nsecond-half\n").unwrap();
        let e = read_secret_line(&p, "token_file").unwrap_err();
        assert!(e.message.contains("more than one line") && !e.to_string().contains("half"), "{e}");
        let e = read_secret_line(&dir.path().join("missing"), "token_file").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
    }

    #[test]
    fn the_permission_rule() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "x").unwrap();
        for (mode, exposed) in
            [(0o600, false), (0o640, false), (0o400, false), (0o644, true), (0o660, true), (0o602, true)]
        {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(is_exposed(&p), Some(exposed), "{mode:o}");
        }
    }
}
