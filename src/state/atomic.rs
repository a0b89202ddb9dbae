//! Replacing a file atomically: a temp file beside it, fsync, rename over it,
//! fsync the directory, so a crash leaves the old file or the new one, never half.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::StateError;

/// Writes `bytes` to `path` with permission bits `mode` (whatever the umask),
/// replacing what was there. On failure `path` is untouched and no temp file
/// is left behind.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let tmp = temp_path(path);
    let written = write_new(&tmp, bytes, mode).and_then(|()| persist(&tmp, path));
    if written.is_err() {
        // Best effort: the temp file may not have been created.
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Moves the finished file `tmp` over `path`: flushes `tmp`, renames it (same
/// filesystem) and flushes the directory entry.
pub fn persist(tmp: &Path, path: &Path) -> Result<(), StateError> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(tmp))?;
    fs::rename(tmp, path).map_err(io(path))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// A fresh hidden name in `path`'s directory: `.<name>.tmp-<pid>-<n>`.
pub fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or(path.as_os_str()));
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    path.with_file_name(name)
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    // Private while being written; fchmod, unlike open's mode, ignores the umask.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(io(tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.set_permissions(Permissions::from_mode(mode & 0o7777)))
        .map_err(io(tmp))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::sys::stat::{Mode, umask};

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn content_is_replaced_and_nothing_else_is_left() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("known_hosts");
        write(&path, b"first\n", 0o600).unwrap();
        write(&path, b"second\n", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second\n");
        assert_eq!(names(tmp.path()), ["known_hosts"]);
    }

    #[test]
    fn mode_is_honoured_whatever_the_umask() {
        let tmp = tempfile::tempdir().unwrap();
        // The umask is per process: set and restore it within one test.
        let old = umask(Mode::from_bits_truncate(0o077));
        let private_umask = write(&tmp.path().join("a"), b"a", 0o644);
        umask(Mode::empty());
        let open_umask = write(&tmp.path().join("b"), b"b", 0o600);
        umask(old);
        private_umask.unwrap();
        open_umask.unwrap();
        assert_eq!(mode_of(&tmp.path().join("a")), 0o644);
        assert_eq!(mode_of(&tmp.path().join("b")), 0o600);
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("handles.json");
        write(&path, b"old", 0o600).unwrap();
        // A directory cannot be renamed over a file: the rename fails.
        let blocked = tmp.path().join("dir");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("inside"), b"x").unwrap();
        let err = write(&blocked, b"new", 0o600).unwrap_err();
        assert!(err.to_string().contains("dir"), "{err}");
        assert_eq!(names(tmp.path()), ["dir", "handles.json"]);
        assert_eq!(fs::read(&path).unwrap(), b"old");

        let missing = tmp.path().join("absent/file");
        let err = write(&missing, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
