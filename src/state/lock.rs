//! flock-based locks on files under the run directory: try, say that we are
//! waiting, then poll until a timeout that names the resource and path.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StateError;

/// Default wait before giving up on a lock.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// A held lock; released when dropped (or by the kernel if the process dies).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
    pub path: PathBuf,
}

/// Takes an exclusive lock on `path`, describing it as `resource` in
/// messages. `on_wait` is called once if the lock is busy.
pub fn acquire(
    path: &Path,
    resource: &str,
    timeout: Duration,
    on_wait: &dyn Fn(&str, &Path),
) -> Result<LockGuard, StateError> {
    acquire_with(path, resource, timeout, on_wait, File::try_lock)
}

/// Takes a shared lock on `path`: any number of readers at once, none while
/// someone holds it exclusively (e.g. VMs reading an image while it is not
/// being replaced or deleted).
pub fn acquire_shared(
    path: &Path,
    resource: &str,
    timeout: Duration,
    on_wait: &dyn Fn(&str, &Path),
) -> Result<LockGuard, StateError> {
    acquire_with(path, resource, timeout, on_wait, File::try_lock_shared)
}

fn acquire_with(
    path: &Path,
    resource: &str,
    timeout: Duration,
    on_wait: &dyn Fn(&str, &Path),
    try_lock: TryLock,
) -> Result<LockGuard, StateError> {
    let file = open(path)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        if try_take(&file, path, try_lock)? {
            return Ok(LockGuard {
                _file: file,
                path: path.to_owned(),
            });
        }
        if !told {
            on_wait(resource, path);
            told = true;
        }
        if start.elapsed() >= timeout {
            return Err(StateError::LockTimeout {
                resource: resource.to_owned(),
                path: path.to_owned(),
                waited_s: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

type TryLock = fn(&File) -> Result<(), TryLockError>;

/// One attempt: `Ok(false)` when someone else holds the lock.
fn try_take(file: &File, path: &Path, try_lock: TryLock) -> Result<bool, StateError> {
    match try_lock(file) {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(source)) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn open(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })
}

/// Takes the lock only if it is free right now.
pub fn try_acquire(path: &Path) -> Result<Option<LockGuard>, StateError> {
    let file = open(path)?;
    Ok(try_take(&file, path, File::try_lock)?.then(|| LockGuard {
        _file: file,
        path: path.to_owned(),
    }))
}

/// Whether some process holds an exclusive lock on `path` (e.g. a live
/// sidecar on `sidecar.lock`). A missing file is not held, and is not created.
///
/// The probe takes a shared lock for an instant, so concurrent probes do not
/// mistake each other for the holder; whoever takes the lock exclusively at
/// that very instant finds it busy and should try again.
pub fn is_held(path: &Path) -> bool {
    File::open(path)
        .is_ok_and(|file| matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn second_holder_waits_then_times_out_naming_the_resource() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm-x.lock");
        let _held = acquire(&path, "VM x", DEFAULT_TIMEOUT, &|_, _| {}).unwrap();
        let waited = Cell::new(false);
        let err = acquire(&path, "VM x", Duration::from_millis(120), &|_, _| {
            waited.set(true)
        })
        .unwrap_err();
        assert!(waited.get());
        let text = err.to_string();
        assert!(
            text.contains("VM x") && text.contains("vm-x.lock"),
            "{text}"
        );
        assert!(try_acquire(&path).unwrap().is_none());
    }

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("image-x.lock");
        let quick = Duration::from_millis(100);
        let _a = acquire_shared(&path, "image x", quick, &|_, _| {}).unwrap();
        let _b = acquire_shared(&path, "image x", quick, &|_, _| {}).unwrap();
        assert!(acquire(&path, "image x", quick, &|_, _| {}).is_err());
    }

    #[test]
    fn released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("l");
        drop(acquire(&path, "l", DEFAULT_TIMEOUT, &|_, _| {}).unwrap());
        assert!(try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn is_held_sees_an_exclusive_holder_only() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sidecar.lock");
        assert!(!is_held(&path));
        assert!(!path.exists(), "probing must not create the lock file");
        let held = acquire(&path, "sidecar", DEFAULT_TIMEOUT, &|_, _| {}).unwrap();
        assert!(is_held(&path));
        drop(held);
        assert!(!is_held(&path));
        let _reader = acquire_shared(&path, "sidecar", DEFAULT_TIMEOUT, &|_, _| {}).unwrap();
        assert!(!is_held(&path), "a shared holder is not an exclusive one");
    }
}
