//! The VM's socket directory `<run dir>/vms/<id>/` (API and vsock sockets,
//! and a pool VM's SSH connection master, closed before the directory goes).

use anyhow::Result;

use super::{Live, Removal, Resource, remove_dir_if_present};
use crate::state::handles::Handles;
use crate::state::model::{Vm, VmId};
use crate::vm::Ctx;

pub struct Sockets;

impl Resource for Sockets {
    fn kind(&self) -> &'static str {
        "sockets"
    }

    fn release(&self, ctx: &Ctx, vm: &Vm, _handles: &Handles) -> Result<()> {
        crate::host::ssh::close_master(&ctx.paths.ssh_control(&vm.id));
        remove_dir_if_present(&ctx.paths.vm_run_dir(&vm.id))
    }

    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
        let mut removals = Vec::new();
        let Ok(entries) = std::fs::read_dir(ctx.paths.vm_run_dirs()) else {
            return Ok(removals);
        };
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().and_then(VmId::parse) else {
                continue;
            };
            if live.running.contains(&id) {
                continue;
            }
            if !dry_run {
                crate::host::ssh::close_master(&ctx.paths.ssh_control(&id));
                remove_dir_if_present(&entry.path())?;
            }
            removals.push(Removal::new(
                "sockets",
                entry.path().display().to_string(),
                "VM not running",
            ));
        }
        Ok(removals)
    }
}
