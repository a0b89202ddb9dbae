//! Loop devices, device-mapper snapshots, copy-on-write clones and ext4 images.

pub mod cow;
pub mod dm;
pub mod ext4;
pub mod loopdev;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};

use nix::errno::Errno;

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
    #[error("cannot run {program}; is it installed (Debian package {package})?")]
    Spawn {
        program: &'static str,
        package: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed on {} ({status}): {stderr}", path.display())]
    Tool {
        program: &'static str,
        path: PathBuf,
        status: ExitStatus,
        stderr: String,
    },
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

/// Runs `program` with `args`, `stdin` fed in full, in the C locale; fails on a non-zero exit.
fn run_tool(
    program: &'static str,
    args: &[&OsStr],
    stdin: Option<&[u8]>,
    path: &Path,
) -> Result<Output, DiskError> {
    let output = run_tool_unchecked(program, args, stdin)?;
    if !output.status.success() {
        return Err(tool_failure(program, path, &output));
    }
    Ok(output)
}

/// Runs `program` like [`run_tool`] but leaves the exit status to the caller.
fn run_tool_unchecked(
    program: &'static str,
    args: &[&OsStr],
    stdin: Option<&[u8]>,
) -> Result<Output, DiskError> {
    let package = if program == "dmsetup" {
        "dmsetup"
    } else {
        "e2fsprogs"
    };
    let spawn_err = |source| DiskError::Spawn {
        program,
        package,
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // The child may exit early; its status and stderr explain why, so a
        // broken pipe here is not the error to report.
        let _ = io::Write::write_all(&mut pipe, data);
    }
    child.wait_with_output().map_err(spawn_err)
}

fn tool_failure(program: &'static str, path: &Path, output: &Output) -> DiskError {
    DiskError::Tool {
        program,
        path: path.to_path_buf(),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
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
