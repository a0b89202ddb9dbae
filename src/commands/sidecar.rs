//! `banger sidecar` (hidden): the detached helper serving DNS for VM names
//! and keeping TAPs warm; `sidecar::Control` starts it on demand.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::Global;
use crate::host::dns::NameLookup;
use crate::sidecar::{self, SidecarOptions, VmDirectory};
use crate::state::layout::POOL_PREFIX;
use crate::vm::{Ctx, VmRead};

pub fn run(global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let options = SidecarOptions {
        lock_path: ctx.paths.sidecar_lock(),
        bridge: ctx.config.bridge.clone(),
        gateway: ctx.config.subnet.gateway(),
        prefix_len: ctx.config.subnet.prefix_len,
        domain: ctx.config.domain.clone(),
        dns_port: ctx.config.dns_port,
        pool_prefix: POOL_PREFIX.into(),
        tap_owner: crate::state::layout::tap_owner(&ctx.home_tag()),
        pool_size: ctx.config.tap_pool_size,
        grace: ctx.config.sidecar_grace,
    };
    sidecar::run(&options, Arc::new(Directory(Mutex::new(ctx))))
}

/// The database as the sidecar sees it: a VM name resolves while it runs.
struct Directory(Mutex<Ctx>);

impl NameLookup for Directory {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        let ctx = self.0.lock().ok()?;
        let vm = ctx.store.find_vm(name).ok()??;
        let read = VmRead::observe(&ctx, vm);
        read.observed.pid.map(|_| read.vm.ip)
    }
}

impl VmDirectory for Directory {
    fn any_running(&self) -> bool {
        let Ok(ctx) = self.0.lock() else {
            return true;
        };
        match ctx.store.list_vms() {
            Ok(vms) => vms
                .into_iter()
                .any(|vm| VmRead::observe(&ctx, vm).observed.pid.is_some()),
            Err(_) => true,
        }
    }

    fn running_taps(&self) -> Vec<String> {
        let Ok(ctx) = self.0.lock() else {
            return Vec::new();
        };
        ctx.store
            .list_vms()
            .unwrap_or_default()
            .into_iter()
            .map(|vm| VmRead::observe(&ctx, vm).observed)
            .filter(|observed| observed.pid.is_some())
            .filter_map(|observed| observed.handles.tap)
            .collect()
    }
}
