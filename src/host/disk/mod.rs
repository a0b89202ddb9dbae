//! Loop devices, device-mapper snapshots, copy-on-write clones, ext4 images
//! and the merged view of an overlay root.

pub mod cow;
pub mod dm;
pub mod ext4;
pub mod loopdev;
pub mod overlay;

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::host::run::RunError;
use crate::state::{StateError, atomic};

/// What went wrong with a disk operation, naming the file, device or image involved.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{op} failed on {}", path.display())]
    Ioctl {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error(
        "no free loop device for {} after {attempts} attempts: other processes took each one first",
        file.display()
    )]
    LoopBusy { file: PathBuf, attempts: u32 },
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "no space left on the filesystem holding {} ({free} bytes free) to grow it to {requested} bytes; free space there or ask for a smaller size",
        path.display()
    )]
    NoSpace {
        path: PathBuf,
        free: u64,
        requested: u64,
        #[source]
        source: Box<DiskError>,
    },
    #[error("debugfs failed on {}: {message}", image.display())]
    Debugfs { image: PathBuf, message: String },
    #[error("{} is {current} bytes; it cannot shrink to {requested} bytes", path.display())]
    Shrink {
        path: PathBuf,
        current: u64,
        requested: u64,
    },
    #[error("guest path {path:?} is not usable: {reason}")]
    GuestPath { path: String, reason: &'static str },
    #[error("{guest_path} does not exist in {}", image.display())]
    NotFound { image: PathBuf, guest_path: String },
    #[error("{guest_path} in {} is not a {expected}", image.display())]
    WrongType {
        image: PathBuf,
        guest_path: String,
        expected: &'static str,
    },
}

/// Builds a `map_err` closure for an I/O error on `path`.
fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DiskError {
    let path = path.to_path_buf();
    move |source| DiskError::Io {
        action,
        path,
        source,
    }
}

/// A file (or staging directory) next to its final destination, removed on
/// drop unless [`TempFile::persist`] renames it into place.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    /// Reserves a fresh hidden name in `dst`'s directory; nothing is created yet.
    fn beside(dst: &Path) -> TempFile {
        TempFile {
            path: atomic::temp_path(dst),
            persisted: false,
        }
    }

    /// Creates the temporary as a new, empty file only root can read.
    fn create(&self) -> Result<fs::File, DiskError> {
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io_err("create", &self.path))
    }

    /// Flushes the file, renames it to `dst` and flushes the directory entry.
    fn persist(mut self, dst: &Path) -> Result<(), DiskError> {
        atomic::persist(&self.path, dst)?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        // Best effort: the temporary may never have been created.
        let _ = if self.path.is_dir() {
            fs::remove_dir_all(&self.path)
        } else {
            fs::remove_file(&self.path)
        };
    }
}
