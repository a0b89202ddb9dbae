//! `banger sidecar` (hidden): the detached helper serving DNS for VM names
//! and keeping TAPs warm, plus `ensure_running`, which starts it on demand.

use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::host::dns::NameLookup;
use crate::lifecycle::{Ctx, POOL_PREFIX, observe};
use crate::sidecar::{self, SidecarOptions, VmDirectory};
use crate::state::paths::Paths;
use crate::state::store::Store;

/// Starts the sidecar, detached in its own session, unless one is alive.
pub fn ensure_running(ctx: &Ctx) -> Result<()> {
    if sidecar::is_alive(&ctx.paths.sidecar_lock()) {
        return Ok(());
    }
    let log_path = ctx.paths.sidecar_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find banger's own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("sidecar")
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("sidecar log")?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    cmd.spawn().context("cannot start the sidecar")?;
    Ok(())
}

pub fn run() -> Result<()> {
    let ctx = Ctx::open()?;
    let options = SidecarOptions {
        lock_path: ctx.paths.sidecar_lock(),
        bridge: ctx.config.bridge.clone(),
        gateway: ctx.config.subnet.gateway(),
        prefix_len: ctx.config.subnet.prefix_len,
        domain: ctx.config.domain.clone(),
        dns_port: ctx.config.dns_port,
        pool_prefix: POOL_PREFIX.into(),
        pool_size: ctx.config.tap_pool_size,
        grace: ctx.config.sidecar_grace,
    };
    let directory = Directory {
        paths: ctx.paths.clone(),
        store: Mutex::new(ctx.store),
    };
    sidecar::run(&options, Arc::new(directory))
}

/// The database as the sidecar sees it: a VM name resolves while it runs.
struct Directory {
    paths: Paths,
    store: Mutex<Store>,
}

impl NameLookup for Directory {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        let store = self.store.lock().ok()?;
        let vm = store.find_vm(name).ok()??;
        observe(&self.paths, &vm).pid.map(|_| vm.ip)
    }
}

impl VmDirectory for Directory {
    fn any_running(&self) -> bool {
        let Ok(store) = self.store.lock() else {
            return true;
        };
        match store.list_vms() {
            Ok(vms) => vms.iter().any(|vm| observe(&self.paths, vm).pid.is_some()),
            Err(_) => true,
        }
    }
}
