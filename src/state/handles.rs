//! `handles.json`: the live kernel resources of one VM, written atomically
//! before each resource is created so teardown always knows what may exist.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StateError, atomic};

/// What a running (or half-started) VM holds on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Handles {
    /// The Firecracker process, once spawned.
    pub pid: Option<u32>,
    /// The VM's TAP device.
    pub tap: Option<String>,
    /// Read-only loop device over the image's rootfs (dm-snapshot only).
    pub base_loop: Option<PathBuf>,
    /// Loop device over the VM's COW file (dm-snapshot only).
    pub cow_loop: Option<PathBuf>,
    /// Device-mapper snapshot name (dm-snapshot only).
    pub dm_name: Option<String>,
    pub dm_dev: Option<PathBuf>,
    pub cow_strategy: Option<super::model::CowStrategy>,
    /// Whether NAT rules may exist for this VM.
    pub nat: bool,
    /// Whether published-port rules may exist for this VM.
    pub ports: bool,
    /// The VMM this run is under.
    pub vmm: Option<super::model::VmmKind>,
    /// The executable the VMM was started from, as the kernel saw it at
    /// spawn: a process is this VM's VMM only if it runs this file.
    pub vmm_exe: Option<super::model::FileId>,
    /// Whether this run must show console output within a bound before
    /// banger trusts Firecracker on this host (see `vm::vmm_choice`).
    pub probe: bool,
    /// The console log's and the VMM log's lengths when this run's VMM was
    /// spawned: what follows is this run's.
    pub console_from: u64,
    pub vmm_log_from: u64,
}

/// How reading `handles.json` went.
#[derive(Debug)]
pub enum Loaded {
    Missing,
    /// Unreadable or not JSON: callers fall back to scanning the host.
    Corrupt(String),
    Found(Handles),
}

impl Handles {
    pub fn path(vm_dir: &Path) -> PathBuf {
        vm_dir.join("handles.json")
    }

    pub fn load(vm_dir: &Path) -> Loaded {
        match fs::read(Self::path(vm_dir)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Loaded::Missing,
            Err(e) => Loaded::Corrupt(e.to_string()),
            // serde would also read a JSON array as the fields in order.
            Ok(bytes) if !bytes.trim_ascii_start().starts_with(b"{") => {
                Loaded::Corrupt("not a JSON object".to_owned())
            }
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(handles) => Loaded::Found(handles),
                Err(e) => Loaded::Corrupt(e.to_string()),
            },
        }
    }

    /// The handles, or empty ones when the file is missing or corrupt.
    pub fn load_or_default(vm_dir: &Path) -> Self {
        match Self::load(vm_dir) {
            Loaded::Found(handles) => handles,
            Loaded::Missing | Loaded::Corrupt(_) => Self::default(),
        }
    }

    /// Writes the file atomically (see [`atomic::write`]).
    pub fn save(&self, vm_dir: &Path) -> Result<(), StateError> {
        let path = Self::path(vm_dir);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| StateError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        atomic::write(&path, &bytes, 0o600)
    }

    pub fn remove(vm_dir: &Path) -> Result<(), StateError> {
        match fs::remove_file(Self::path(vm_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                path: Self::path(vm_dir),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.pid.is_none()
            && self.tap.is_none()
            && self.base_loop.is_none()
            && self.cow_loop.is_none()
            && self.dm_name.is_none()
            && !self.nat
            && !self.ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_missing_and_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(Handles::load(tmp.path()), Loaded::Missing));
        let handles = Handles {
            pid: Some(42),
            tap: Some("bg-0123456789".into()),
            cow_strategy: Some(crate::state::model::CowStrategy::Copy),
            nat: true,
            ..Handles::default()
        };
        handles.save(tmp.path()).unwrap();
        match Handles::load(tmp.path()) {
            Loaded::Found(read) => assert_eq!(read, handles),
            other => panic!("{other:?}"),
        }
        fs::write(Handles::path(tmp.path()), b"{\"pid\": 4").unwrap();
        assert!(matches!(Handles::load(tmp.path()), Loaded::Corrupt(_)));
        fs::write(Handles::path(tmp.path()), b"[42, \"bg-0123456789\"]").unwrap();
        assert!(matches!(Handles::load(tmp.path()), Loaded::Corrupt(_)));
        assert!(Handles::load_or_default(tmp.path()).is_empty());
        Handles::remove(tmp.path()).unwrap();
        Handles::remove(tmp.path()).unwrap();
        assert!(matches!(Handles::load(tmp.path()), Loaded::Missing));
    }

    #[test]
    fn unknown_fields_and_missing_fields_are_tolerated() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(Handles::path(tmp.path()), br#"{"pid": 7, "future": 1}"#).unwrap();
        match Handles::load(tmp.path()) {
            Loaded::Found(read) => assert_eq!(read.pid, Some(7)),
            other => panic!("{other:?}"),
        }
    }
}
