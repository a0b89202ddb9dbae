//! flock-based locks on files under the run directory: try, say that we are
//! waiting, then poll until a timeout that names the resource and path.
//!
//! A lock file may be removed ([`LockGuard::remove`]) by whoever holds it,
//! when what it guards is gone. Whoever takes a lock then checks that the
//! path still names the file it locked; if it does not (the file was
//! unlinked or replaced meanwhile), it drops that lock and tries again on the
//! file the path names now, so no two holders ever lock different files
//! under one name.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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

impl LockGuard {
    /// Unlinks the lock file while still holding it, then releases it: for
    /// a lock whose object is gone (a deleted VM). Anyone waiting on the old
    /// file finds, once it gets it, that the path no longer names it, and
    /// retries on a fresh file. Already gone is fine.
    pub fn remove(self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
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
    let mut file = open(path)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        if try_take(&file, path, try_lock)? {
            if still_named(&file, path)? {
                return Ok(LockGuard {
                    _file: file,
                    path: path.to_owned(),
                });
            }
            // Unlinked or replaced while we waited: lock what it names now.
            file = open(path)?;
            continue;
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
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    // Without blocking, and only a regular file: a FIFO put at a lock's
    // path would otherwise hang the open.
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    if !file.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    Ok(file)
}

/// Whether `path` still names the file `file` has open (same device and
/// inode): false once it was unlinked, or replaced by another file.
fn still_named(file: &File, path: &Path) -> Result<bool, StateError> {
    let held = file.metadata().map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })?;
    match std::fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Takes the lock only if it is free right now.
pub fn try_acquire(path: &Path) -> Result<Option<LockGuard>, StateError> {
    loop {
        let file = open(path)?;
        if !try_take(&file, path, File::try_lock)? {
            return Ok(None);
        }
        if still_named(&file, path)? {
            return Ok(Some(LockGuard {
                _file: file,
                path: path.to_owned(),
            }));
        }
    }
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
    fn a_waiter_on_a_removed_lock_file_locks_the_fresh_one() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm-x.lock");
        let held = acquire(&path, "VM x", DEFAULT_TIMEOUT, &|_, _| {}).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let guard = acquire(&path, "VM x", DEFAULT_TIMEOUT, &|_, _| {}).unwrap();
                // Holding it: nobody else can take the file the path names.
                assert!(try_acquire(&path).unwrap().is_none());
                guard.remove().unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        held.remove().unwrap();
        waiter.join().unwrap();
        assert!(!path.exists(), "the lock file is left");
    }

    #[test]
    fn try_acquire_never_holds_an_unlinked_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vm-y.lock");
        let first = try_acquire(&path).unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        // The path now names a new file, which is free.
        let second = try_acquire(&path).unwrap().unwrap();
        assert!(still_named(&second._file, &path).unwrap());
        drop(first);
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
