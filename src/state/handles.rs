//! `handles.json`: the live kernel resources of one VM, written atomically
//! before each resource is created so teardown always knows what may exist.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ids::VmId;
use super::layout::Name;
use super::{StateError, atomic};

/// Where device-mapper devices appear.
const DM_DIR: &str = "/dev/mapper";

/// `/dev/loop<N>`, in its one spelling.
fn is_loop_device_path(dev: &Path) -> bool {
    dev.to_str()
        .and_then(|text| text.strip_prefix("/dev/loop"))
        .is_some_and(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        })
}

/// A state file's bytes: opened without following a symlink or blocking on
/// a FIFO, a regular file, at most [`MAX_LEN`] bytes.
fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_LEN {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than the {MAX_LEN} a journal can hold",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(MAX_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(std::io::Error::other("grew past its bound while read"));
    }
    Ok(bytes)
}

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

/// The largest `handles.json` read; banger's own are a few hundred bytes.
pub const MAX_LEN: u64 = 64 << 10;

impl Handles {
    pub fn path(vm_dir: &Path) -> PathBuf {
        vm_dir.join("handles.json")
    }

    /// Reads the journal of the VM whose directory is `vm_dir` (named by
    /// its id). Anything banger would not have written is `Corrupt`: a
    /// file that is not a regular one or is larger than [`MAX_LEN`], or a
    /// TAP, device-mapper or loop name that is not this VM's kind of name.
    /// Callers then go by the names derived from the VM's id alone.
    pub fn load(vm_dir: &Path) -> Loaded {
        let bytes = match read_bounded(&Self::path(vm_dir)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return Loaded::Corrupt(e.to_string()),
            Ok(bytes) => bytes,
        };
        // serde would also read a JSON array as the fields in order.
        if !bytes.trim_ascii_start().starts_with(b"{") {
            return Loaded::Corrupt("not a JSON object".to_owned());
        }
        let handles: Self = match serde_json::from_slice(&bytes) {
            Ok(handles) => handles,
            Err(e) => return Loaded::Corrupt(e.to_string()),
        };
        let id = vm_dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(VmId::parse);
        match id.map(|id| handles.check(&id)) {
            Some(Ok(())) => Loaded::Found(handles),
            Some(Err(why)) => Loaded::Corrupt(why),
            None => Loaded::Corrupt(format!("{} is not a VM's directory", vm_dir.display())),
        }
    }

    /// Whether every name recorded is one banger makes for VM `id`.
    pub fn check(&self, id: &VmId) -> Result<(), String> {
        if let Some(tap) = &self.tap
            && Name::parse(tap) != Some(Name::Tap(id.clone()))
        {
            return Err(format!("TAP {tap:?} is not VM {id}'s"));
        }
        if let Some(dm) = &self.dm_name
            && !matches!(Name::parse(dm), Some(Name::Dm(owner)) if owner.id == *id)
        {
            return Err(format!("device-mapper name {dm:?} is not VM {id}'s"));
        }
        if let Some(dev) = &self.dm_dev {
            let expected = self
                .dm_name
                .as_ref()
                .map(|name| Path::new(DM_DIR).join(name));
            if expected.as_deref() != Some(dev.as_path()) {
                return Err(format!(
                    "device {} is not the VM's device-mapper device",
                    dev.display()
                ));
            }
        }
        for dev in self.base_loop.iter().chain(&self.cow_loop) {
            if !is_loop_device_path(dev) {
                return Err(format!("{} is not a loop device", dev.display()));
            }
        }
        Ok(())
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

    /// A VM's directory, named by its id.
    fn vm_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("0123456789");
        fs::create_dir(&dir).unwrap();
        (tmp, dir)
    }

    #[test]
    fn round_trip_missing_and_corrupt() {
        let (_tmp, dir) = vm_dir();
        assert!(matches!(Handles::load(&dir), Loaded::Missing));
        let handles = Handles {
            pid: Some(42),
            tap: Some("bg-0123456789".into()),
            cow_strategy: Some(crate::state::model::CowStrategy::Copy),
            nat: true,
            ..Handles::default()
        };
        handles.save(&dir).unwrap();
        match Handles::load(&dir) {
            Loaded::Found(read) => assert_eq!(read, handles),
            other => panic!("{other:?}"),
        }
        fs::write(Handles::path(&dir), b"{\"pid\": 4").unwrap();
        assert!(matches!(Handles::load(&dir), Loaded::Corrupt(_)));
        fs::write(Handles::path(&dir), b"[42, \"bg-0123456789\"]").unwrap();
        assert!(matches!(Handles::load(&dir), Loaded::Corrupt(_)));
        assert!(Handles::load_or_default(&dir).is_empty());
        Handles::remove(&dir).unwrap();
        Handles::remove(&dir).unwrap();
        assert!(matches!(Handles::load(&dir), Loaded::Missing));
    }

    #[test]
    fn unknown_fields_and_missing_fields_are_tolerated() {
        let (_tmp, dir) = vm_dir();
        fs::write(Handles::path(&dir), br#"{"pid": 7, "future": 1}"#).unwrap();
        match Handles::load(&dir) {
            Loaded::Found(read) => assert_eq!(read.pid, Some(7)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_that_are_not_this_vm_s_make_the_journal_corrupt() {
        let (_tmp, dir) = vm_dir();
        let home = crate::state::layout::HomeTag::parse("00c0ffee").unwrap();
        let id = VmId::parse("0123456789").unwrap();
        let good = Handles {
            tap: Some("bg-0123456789".into()),
            dm_name: Some(crate::state::layout::dm(&home, &id)),
            dm_dev: Some(PathBuf::from("/dev/mapper/banger-00c0ffee-0123456789")),
            base_loop: Some("/dev/loop3".into()),
            cow_loop: Some("/dev/loop12".into()),
            ..Handles::default()
        };
        good.save(&dir).unwrap();
        assert!(matches!(Handles::load(&dir), Loaded::Found(_)));
        let bad = [
            Handles {
                tap: Some("eth0".into()),
                ..good.clone()
            },
            Handles {
                tap: Some("docker0".into()),
                ..good.clone()
            },
            Handles {
                tap: Some("bg-0123456788".into()),
                ..good.clone()
            },
            Handles {
                tap: Some("bgpool0".into()),
                ..good.clone()
            },
            Handles {
                dm_name: Some("banger-0123456788".into()),
                ..good.clone()
            },
            Handles {
                dm_name: Some("root".into()),
                ..good.clone()
            },
            Handles {
                dm_dev: Some("/dev/sda".into()),
                ..good.clone()
            },
            Handles {
                base_loop: Some("/dev/sda1".into()),
                ..good.clone()
            },
            Handles {
                cow_loop: Some("/dev/loop03".into()),
                ..good.clone()
            },
            Handles {
                cow_loop: Some("/dev/loop1/../sda".into()),
                ..good.clone()
            },
        ];
        for handles in bad {
            handles.save(&dir).unwrap();
            assert!(
                matches!(Handles::load(&dir), Loaded::Corrupt(_)),
                "{handles:?}"
            );
            assert!(Handles::load_or_default(&dir).is_empty());
        }
    }

    #[test]
    fn only_a_small_regular_file_is_read() {
        let (_tmp, dir) = vm_dir();
        let path = Handles::path(&dir);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // A FIFO would block a plain read forever.
        assert!(matches!(Handles::load(&dir), Loaded::Corrupt(_)));
        fs::remove_file(&path).unwrap();
        fs::File::create(&path)
            .unwrap()
            .set_len(MAX_LEN + 1)
            .unwrap();
        assert!(matches!(Handles::load(&dir), Loaded::Corrupt(_)));
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        assert!(matches!(Handles::load(&dir), Loaded::Corrupt(_)));
    }
}
