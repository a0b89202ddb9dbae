//! The VMM process: spawned detached with its API socket in the VM's run
//! dir (its executable recorded), found again by that socket and that
//! executable, killed on teardown if still alive.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::{Journal, Live, Removal, Resource};
use crate::state::handles::Handles;
use crate::state::model::{Vm, VmId};
use crate::vm::{Ctx, VmFiles};

/// How long a spawned VMM may take to serve its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Vmm;

/// The VM's live VMM: the recorded pid if it still serves this VM's API
/// socket, else one found by its socket; either way a process running the
/// executable recorded at spawn (or a configured VMM binary) as banger's
/// user. Without a recorded pid or a socket directory no VMM can be serving
/// it, so the search (about a millisecond) is skipped: `vm ls` stays fast
/// with many stopped VMs.
pub fn find(ctx: &Ctx, id: &VmId, handles: &Handles) -> Option<u32> {
    if handles.pid.is_none() && !ctx.paths.vm_run_dir(id).exists() {
        return None;
    }
    ctx.host
        .vmm
        .find(handles.pid, handles.vmm_exe, &ctx.paths.api_sock(id))
}

/// Spawns the VM's VMM and waits until it serves its API; the pid is in the
/// journal before anything can fail.
pub fn spawn(ctx: &Ctx, vm: &Vm, binary: &Path, journal: &mut Journal) -> Result<u32> {
    let api_sock = ctx.paths.api_sock(&vm.id);
    crate::state::paths::ensure_private_dir(&ctx.paths.vm_run_dir(&vm.id))?;
    let files = VmFiles::of(&ctx.paths, vm);
    let spawned = ctx
        .host
        .vmm
        .spawn(binary, &api_sock, vm.id.as_str(), &files.console_log)?;
    let pid = spawned.pid;
    journal.record(|h| {
        h.pid = Some(pid);
        h.vmm_exe = spawned.exe;
    })?;
    ctx.host
        .vmm
        .wait_for_socket(&api_sock, pid, SOCKET_TIMEOUT)?;
    Ok(pid)
}

impl Resource for Vmm {
    fn kind(&self) -> &'static str {
        "VMM process"
    }

    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
        if let Some(pid) = find(ctx, &vm.id, handles) {
            ctx.host.vmm.kill(pid);
        }
        Ok(())
    }

    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
        let mut removals = Vec::new();
        let run_dirs = ctx.paths.vm_run_dirs();
        for (pid, sock) in ctx.host.vmm.list(&run_dirs, &live.vmm_exes) {
            if id_of_socket(&run_dirs, &sock).is_some_and(|id| live.known.contains(&id)) {
                continue;
            }
            if !dry_run {
                ctx.host.vmm.kill(pid);
            }
            removals.push(Removal::new(
                "process",
                pid.to_string(),
                format!("VMM of a deleted VM ({})", sock.display()),
            ));
        }
        Ok(removals)
    }
}

/// The VM id in `<run dir>/vms/<id>/api.sock`.
fn id_of_socket(run_dirs: &Path, sock: &Path) -> Option<VmId> {
    let rel = sock.strip_prefix(run_dirs).ok()?;
    VmId::parse(rel.components().next()?.as_os_str().to_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_vm_id_in_a_socket_path() {
        let dirs = Path::new("/run/banger/vms");
        let id = id_of_socket(dirs, Path::new("/run/banger/vms/0123456789/api.sock"));
        assert_eq!(id.as_ref().map(VmId::as_str), Some("0123456789"));
        assert_eq!(
            id_of_socket(dirs, Path::new("/run/banger/vms/abc/api.sock")),
            None
        );
        assert_eq!(id_of_socket(dirs, Path::new("/elsewhere/api.sock")), None);
    }
}
