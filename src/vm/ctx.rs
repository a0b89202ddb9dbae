//! `Ctx`: what every operation needs — paths, config, the open database and
//! the host — and the locks taken through it.

use std::net::SocketAddrV4;
use std::path::Path;

use anyhow::{Context, Result};

use super::host::{Fence, Host};
use super::timings::Timings;
use crate::state::config::Config;
use crate::state::layout::HomeTag;
use crate::state::lock::{self, LockGuard};
use crate::state::model::Vm;
use crate::state::paths::Paths;
use crate::state::store::Store;

/// Paths, config, the open database and the host.
pub struct Ctx {
    pub paths: Paths,
    pub config: Config,
    pub store: Store,
    pub host: Host,
    /// `-v`: stage lines on stderr.
    pub verbose: bool,
}

impl Ctx {
    /// Creates the state directories if needed, loads config, opens the
    /// database, and picks the real host.
    pub fn open(verbose: bool) -> Result<Self> {
        let paths = Paths::from_env();
        let config = Config::load()?;
        paths
            .ensure()
            .context("cannot prepare banger's state directories (are you root?)")?;
        let store = Store::open(&paths.db())?.with_subnet(config.subnet);
        let sidecar = crate::sidecar::Control::new(&paths);
        let host = Host::real(
            config.firecracker.clone(),
            config.qemu_vmm.clone(),
            crate::state::layout::tap_owner(&crate::state::layout::HomeTag::of(&paths.home)),
            Box::new(sidecar),
        );
        Ok(Self {
            paths,
            config,
            store,
            host,
            verbose,
        })
    }

    /// Fresh stage timings that print stage lines under `-v`.
    pub fn timings(&self) -> Timings {
        Timings::new(self.verbose)
    }

    /// Locks an image while its files are replaced or deleted.
    pub fn lock_image(&self, name: &str) -> Result<LockGuard> {
        Ok(lock::acquire(
            &self.paths.image_lock(name),
            &format!("image {name}"),
            lock::DEFAULT_TIMEOUT,
            &say_waiting,
        )?)
    }

    /// Locks an image against replacement while its files are read; any
    /// number of readers at once.
    pub fn lock_image_shared(&self, name: &str) -> Result<LockGuard> {
        Ok(lock::acquire_shared(
            &self.paths.image_lock(name),
            &format!("image {name}"),
            lock::DEFAULT_TIMEOUT,
            &say_waiting,
        )?)
    }

    /// Locks bridge and NAT table setup.
    pub fn lock_net(&self) -> Result<LockGuard> {
        lock_net(&self.paths)
    }

    /// The tag naming this home in host objects all homes share.
    pub fn home_tag(&self) -> HomeTag {
        HomeTag::of(&self.paths.home)
    }

    /// The configured bridge's fence: DNS admitted to the sidecar's address.
    pub fn fence(&self) -> Fence {
        Fence {
            bridge: self.config.bridge.clone(),
            dns: SocketAddrV4::new(self.config.subnet.gateway(), self.config.dns_port),
        }
    }

    pub fn dns_name(&self, vm: &Vm) -> String {
        format!("{}.{}", vm.name, self.config.domain)
    }
}

pub(crate) fn lock_net(paths: &Paths) -> Result<LockGuard> {
    Ok(lock::acquire(
        &paths.net_lock(),
        "network setup",
        lock::DEFAULT_TIMEOUT,
        &say_waiting,
    )?)
}

pub(crate) fn say_waiting(resource: &str, path: &Path) {
    eprintln!("waiting for lock on {resource} ({})", path.display());
}
