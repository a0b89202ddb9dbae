//! Every `BANGER_*` environment variable banger reads, listed and read here
//! once per process; nothing else looks at the environment for settings.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use crate::state::StateError;
use crate::state::model::VmmChoice;
use crate::state::parse;

/// Durable state directory (default `/var/lib/banger`).
pub const HOME: &str = "BANGER_HOME";
/// Sockets and locks (default `/run/banger`).
pub const RUN_DIR: &str = "BANGER_RUN_DIR";
/// The config file (default `/etc/banger/config.toml`).
pub const CONFIG: &str = "BANGER_CONFIG";
/// The VMM binary, over the config file's `firecracker` and `PATH`.
pub const FIRECRACKER: &str = "BANGER_FIRECRACKER";
/// Which VMM starts VMs: `auto`, `firecracker` or `qemu`, over the config's `vmm`.
pub const VMM: &str = "BANGER_VMM";
/// The `banger-vmm-qemu` binary, over the one beside `banger` and `PATH`.
pub const VMM_QEMU: &str = "BANGER_VMM_QEMU";
/// The guest agent put into built images (default: beside `banger`).
pub const AGENT: &str = "BANGER_AGENT";
/// How long the sidecar outlives the last running VM, e.g. `30s`.
pub const SIDECAR_GRACE: &str = "BANGER_SIDECAR_GRACE";
/// How long to wait for another command's database write (default `10s`).
pub const BUSY_TIMEOUT: &str = "BANGER_BUSY_TIMEOUT";
/// How long a VM of `vm run --rm` outlives its run if banger is killed
/// outright (default `90s`).
pub const RM_LEASE: &str = "BANGER_RM_LEASE";
/// Test builds only: abort right after this stage (`src/fault.rs`).
pub const FAULT: &str = "BANGER_FAULT";

/// Every variable above, for the README check.
pub const ALL: &[&str] = &[
    HOME,
    RUN_DIR,
    CONFIG,
    FIRECRACKER,
    VMM,
    VMM_QEMU,
    AGENT,
    SIDECAR_GRACE,
    BUSY_TIMEOUT,
    RM_LEASE,
    FAULT,
];

/// The variables as this process found them.
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub home: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub firecracker: Option<PathBuf>,
    vmm: Option<OsString>,
    pub vmm_qemu: Option<PathBuf>,
    pub agent: Option<PathBuf>,
    sidecar_grace: Option<OsString>,
    busy_timeout: Option<OsString>,
    rm_lease: Option<OsString>,
    pub fault: Option<String>,
}

static ENV: OnceLock<Env> = OnceLock::new();

impl Env {
    /// The process's environment, read on first use.
    pub fn get() -> &'static Env {
        ENV.get_or_init(Self::read)
    }

    fn read() -> Self {
        let path = |name| std::env::var_os(name).map(PathBuf::from);
        Self {
            home: path(HOME),
            run_dir: path(RUN_DIR),
            config: path(CONFIG),
            firecracker: path(FIRECRACKER),
            vmm: std::env::var_os(VMM).filter(|v| !v.is_empty()),
            vmm_qemu: path(VMM_QEMU).filter(|p| !p.as_os_str().is_empty()),
            agent: path(AGENT),
            sidecar_grace: std::env::var_os(SIDECAR_GRACE),
            busy_timeout: std::env::var_os(BUSY_TIMEOUT),
            rm_lease: std::env::var_os(RM_LEASE),
            fault: std::env::var(FAULT).ok(),
        }
    }

    /// `BANGER_SIDECAR_GRACE`, parsed; an unparsable value is an error naming it.
    pub fn sidecar_grace(&self) -> Result<Option<Duration>, StateError> {
        duration(SIDECAR_GRACE, self.sidecar_grace.as_ref())
    }

    /// `BANGER_VMM`, parsed; an unknown value is an error naming it.
    pub fn vmm(&self) -> Result<Option<VmmChoice>, StateError> {
        self.vmm
            .as_ref()
            .map(|v| {
                VmmChoice::parse(&v.to_string_lossy()).map_err(|message| StateError::Config {
                    path: VMM.into(),
                    message,
                })
            })
            .transpose()
    }

    /// `BANGER_BUSY_TIMEOUT`, parsed.
    pub fn busy_timeout(&self) -> Result<Option<Duration>, StateError> {
        duration(BUSY_TIMEOUT, self.busy_timeout.as_ref())
    }

    /// `BANGER_RM_LEASE`, parsed.
    pub fn rm_lease(&self) -> Result<Option<Duration>, StateError> {
        duration(RM_LEASE, self.rm_lease.as_ref())
    }
}

fn duration(name: &str, value: Option<&OsString>) -> Result<Option<Duration>, StateError> {
    value
        .map(|v| {
            parse::duration(&v.to_string_lossy()).map_err(|e| StateError::Config {
                path: name.into(),
                message: e.to_string(),
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_lists_every_variable() {
        let readme = include_str!("../README.md");
        for name in ALL {
            assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
        }
    }

    #[test]
    fn bad_durations_name_the_variable() {
        let env = Env {
            busy_timeout: Some("soon".into()),
            sidecar_grace: Some("2s".into()),
            ..Env::default()
        };
        let err = env.busy_timeout().unwrap_err().to_string();
        assert!(err.contains(BUSY_TIMEOUT), "{err}");
        assert_eq!(env.sidecar_grace().unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(Env::default().sidecar_grace().unwrap(), None);
    }
}
