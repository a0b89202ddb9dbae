//! What banger knows: paths, config, the SQLite store, locks and handles.

pub mod atomic;
pub mod config;
pub mod files;
pub mod handles;
pub mod ids;
pub mod layout;
pub mod lock;
pub mod model;
pub mod parse;
pub mod paths;
pub mod store;

use std::path::PathBuf;

/// Errors from banger's own state, each naming the file or record involved.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot access {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database {}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database {} is busy (another banger command holds it); try again",
        path.display()
    )]
    DbBusy { path: PathBuf },
    #[error(
        "no space left on the filesystem holding database {} ({free} bytes free); free space there and try again",
        path.display()
    )]
    DbNoSpace {
        path: PathBuf,
        free: u64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {} was written by a newer banger (schema {found}, this banger knows {known})", path.display())]
    DbTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("config file {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("timed out after {waited_s}s waiting for lock on {resource} ({}); another banger command holds it", path.display())]
    LockTimeout {
        resource: String,
        path: PathBuf,
        waited_s: u64,
    },
    #[error("a VM named {0:?} already exists")]
    NameTaken(String),
    #[error("no VM named {0:?} (see `banger vm ls`)")]
    NoSuchVm(String),
    #[error(
        "VM {}'s database row is unusable ({}); `banger vm delete {}` removes the row",
        .0.label(), .0.why, .0.name
    )]
    BadVm(Box<model::BadVm>),
    #[error("no image named {0:?} (see `banger image ls`)")]
    NoSuchImage(String),
    #[error("image {0} has no warm pool (see `banger pool ls`)")]
    NoSuchPool(String),
    #[error("an image named {0:?} already exists")]
    ImageExists(String),
    #[error("subnet {0} has no free guest address left")]
    SubnetFull(String),
    #[error("host port {port} is already published by VM {vm}")]
    PortTaken { port: String, vm: String },
}

/// Below this much free space, an I/O error of SQLite is put down to a full disk.
const NEARLY_FULL: u64 = 1 << 20;

/// Free bytes (for root) on the filesystem holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let dir = path.parent().unwrap_or(path);
    nix::sys::statvfs::statvfs(dir)
        .ok()
        .map(|s| s.blocks_free() * s.fragment_size())
}

impl StateError {
    pub(crate) fn db(path: &std::path::Path, source: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(e, _) = &source
            && matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            )
        {
            return Self::DbBusy {
                path: path.to_owned(),
            };
        }
        // SQLite reports a full disk as SQLITE_FULL, or as an I/O error when
        // it cannot grow its shared-memory or WAL file.
        if let rusqlite::Error::SqliteFailure(e, _) = &source
            && matches!(
                e.code,
                rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure
            )
            && let Some(free) = free_bytes(path)
            && (e.code == rusqlite::ErrorCode::DiskFull || free < NEARLY_FULL)
        {
            return Self::DbNoSpace {
                path: path.to_owned(),
                free,
                source,
            };
        }
        Self::Db {
            path: path.to_owned(),
            source,
        }
    }
}
