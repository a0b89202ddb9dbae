//! `/dev/kvm` and the host kernel: whether KVM can be opened, and which
//! kernel a finding about running guests was made on.

use std::io;
use std::os::fd::AsRawFd;

/// The KVM API version every KVM since Linux 2.6.22 reports.
pub const API_VERSION: i32 = 12;

#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    #[error("/dev/kvm: {0}")]
    Open(#[source] io::Error),
    #[error("/dev/kvm: KVM_GET_API_VERSION failed: {0}")]
    Ioctl(#[source] nix::Error),
    #[error("/dev/kvm reports KVM API version {0}, not {API_VERSION}")]
    Version(i32),
}

impl KvmError {
    /// How opening failed, for hints (`None`: it opened).
    pub fn open_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Self::Open(e) => Some(e.kind()),
            _ => None,
        }
    }
}

nix::ioctl_none!(kvm_get_api_version, 0xAE, 0x00);

/// Opens `/dev/kvm` read-write (as a VMM does) and checks its API version.
pub fn check() -> Result<(), KvmError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(KvmError::Open)?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only reads the fd.
    match unsafe { kvm_get_api_version(file.as_raw_fd()) } {
        Ok(API_VERSION) => Ok(()),
        Ok(other) => Err(KvmError::Version(other)),
        Err(e) => Err(KvmError::Ioctl(e)),
    }
}

/// The running kernel as `uname -r` and `uname -v` print it: a finding made
/// on another kernel (an upgrade, another host) no longer holds.
pub fn host_kernel() -> String {
    let uts = nix::sys::utsname::uname();
    match uts {
        Ok(uts) => format!(
            "{} {}",
            uts.release().to_string_lossy(),
            uts.version().to_string_lossy()
        ),
        Err(e) => format!("unknown ({e})"),
    }
}
