//! `banger gc`: for cron. Deletes expired VMs, reconciles every VM, and
//! removes leaked resources that are banger's and nothing else. Silent when
//! there is nothing to do; never touches a VM another command holds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;

use super::print_json;
use crate::cli::GcArgs;
use crate::host::disk::{dm, loopdev};
use crate::host::{net, procs};
use crate::lifecycle::{self, Ctx, DM_PREFIX, POOL_PREFIX, TAP_PREFIX};
use crate::state::handles::Handles;
use crate::state::lock;
use crate::state::model::now;

/// One thing gc removed (or, with --dry-run, would remove).
#[derive(Debug, Serialize)]
pub struct Removal {
    pub kind: &'static str,
    pub target: String,
    pub reason: String,
}

pub fn run(args: GcArgs, verbose: u8) -> Result<()> {
    let ctx = Ctx::open()?;
    let removals = collect(&ctx, args.dry_run)?;
    if args.json {
        return print_json(&removals);
    }
    let verb = if args.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for r in &removals {
        println!("{verb} {} {} ({})", r.kind, r.target, r.reason);
    }
    if removals.is_empty() && verbose > 0 {
        eprintln!("nothing to clean up");
    }
    Ok(())
}

/// Finds (and unless `dry_run`, removes) everything gc is responsible for.
pub fn collect(ctx: &Ctx, dry_run: bool) -> Result<Vec<Removal>> {
    let mut removals = Vec::new();
    let mut note = |kind, target: String, reason: String| {
        removals.push(Removal {
            kind,
            target,
            reason,
        })
    };

    // VMs: expired or never finished → delete; the rest → reconcile.
    // `live` collects what running or busy VMs may own.
    let mut live = Live::default();
    let mut known_ids = HashSet::new();
    for mut vm in ctx.store.list_vms()? {
        known_ids.insert(vm.id.clone());
        let Some(_guard) = lock::try_acquire(&ctx.paths.vm_lock(&vm.id))? else {
            live.add_vm(&vm.id, &Handles::load_or_default(&ctx.paths.vm_dir(&vm.id)));
            continue;
        };
        if !lifecycle::refresh(ctx, &mut vm)? {
            // Deleted since the list was read; leftovers are swept below.
            known_ids.remove(&vm.id);
            continue;
        }
        let expired = vm.expires_at.is_some_and(|t| t <= now());
        if expired || vm.creating {
            let reason = if expired {
                "its --ttl expired"
            } else {
                "its creation did not finish"
            };
            if !dry_run {
                super::vm_delete::delete(ctx, &mut vm, true)?;
            }
            known_ids.remove(&vm.id);
            note("vm", vm.name.clone(), reason.into());
            continue;
        }
        let observed = if dry_run {
            lifecycle::observe(&ctx.paths, &vm)
        } else {
            lifecycle::reconcile(ctx, &mut vm)?
        };
        if observed.pid.is_some() {
            live.add_vm(&vm.id, &observed.handles);
        }
    }

    // VMM processes whose VM is gone.
    for (pid, sock) in procs::vmms_under(&ctx.paths.run_dir) {
        let id = id_from_run_path(&ctx.paths.run_dir, &sock);
        if id.as_ref().is_some_and(|id| known_ids.contains(id)) {
            continue;
        }
        if !dry_run {
            procs::signal(pid, nix::sys::signal::Signal::SIGKILL)?;
            procs::wait_exit(pid, std::time::Duration::from_secs(5));
        }
        note(
            "process",
            pid.to_string(),
            format!("VMM of a deleted VM ({})", sock.display()),
        );
    }

    // NAT rules of VMs that are not running.
    for id in net::nat::vms_with_rules()? {
        if !live.ids.contains(&id) {
            if !dry_run {
                net::nat::remove_vm_rules(&id)?;
            }
            note("nat-rules", id, "VM not running".into());
        }
    }

    // TAPs banger named: VM TAPs no running VM uses; pool TAPs when no sidecar keeps them.
    let sidecar_alive = crate::sidecar::is_alive(&ctx.paths.sidecar_lock());
    for tap in net::bridge::list_links(TAP_PREFIX)? {
        if !live.taps.contains(&tap) && is_vm_tap(&tap) {
            if !dry_run {
                net::bridge::delete_link(&tap)?;
            }
            note("tap", tap, "no running VM uses it".into());
        }
    }
    if !sidecar_alive {
        for tap in net::bridge::list_links(POOL_PREFIX)? {
            if !dry_run {
                net::bridge::delete_link(&tap)?;
            }
            note("tap", tap, "pool TAP without a sidecar".into());
        }
    }

    // dm devices, then loop devices backed by banger's files.
    if dm::available() {
        for name in dm::list(DM_PREFIX)? {
            let owner = name.trim_end_matches("-base");
            if !live.dm.contains(owner) {
                if !dry_run {
                    dm::remove(owner)?;
                }
                note("dm-device", name, "no running VM uses it".into());
            }
        }
    }
    for (dev, backing) in loopdev::list()? {
        if backing.starts_with(&ctx.paths.home) && !live.loops.contains(&dev) {
            if !dry_run {
                loopdev::detach(&dev)?;
            }
            note(
                "loop-device",
                dev.display().to_string(),
                format!("backs {}", backing.display()),
            );
        }
    }

    // Sockets of stopped or deleted VMs, lock files of deleted VMs.
    for entry in read_dir(&ctx.paths.run_dir.join("vms")) {
        let id = entry.file_name().to_string_lossy().into_owned();
        if !live.ids.contains(&id) {
            if !dry_run {
                lifecycle::remove_dir_if_present(&entry.path())?;
            }
            note(
                "sockets",
                entry.path().display().to_string(),
                "VM not running".into(),
            );
        }
    }
    for entry in read_dir(&ctx.paths.locks_dir()) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = file
            .strip_prefix("vm-")
            .and_then(|f| f.strip_suffix(".lock"))
        else {
            continue;
        };
        if known_ids.contains(id) || live.ids.contains(id) {
            continue;
        }
        if let Some(_guard) = lock::try_acquire(&entry.path())? {
            if !dry_run {
                std::fs::remove_file(entry.path()).ok();
            }
            note(
                "lock-file",
                entry.path().display().to_string(),
                "VM deleted".into(),
            );
        }
    }
    // Half-written images from interrupted builds or imports.
    for entry in read_dir(&ctx.paths.images_dir()) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(".tmp-")
            .and_then(|f| f.rsplit('-').next()?.parse::<i32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            if !dry_run {
                lifecycle::remove_dir_if_present(&entry.path())?;
            }
            note(
                "image-staging",
                entry.path().display().to_string(),
                "interrupted image build or import".into(),
            );
        }
    }
    Ok(removals)
}

/// What running (or busy) VMs own; gc leaves all of it alone.
#[derive(Default)]
struct Live {
    ids: HashSet<String>,
    taps: HashSet<String>,
    dm: HashSet<String>,
    loops: HashSet<PathBuf>,
}

impl Live {
    /// A running VM, or one another command holds: it owns its handles and
    /// whatever its deterministic names say.
    fn add_vm(&mut self, id: &str, handles: &Handles) {
        self.ids.insert(id.to_owned());
        self.taps.insert(format!("{TAP_PREFIX}{id}"));
        self.taps.extend(handles.tap.clone());
        self.dm.insert(format!("{DM_PREFIX}{id}"));
        self.loops.extend(handles.base_loop.clone());
        self.loops.extend(handles.cow_loop.clone());
    }
}

/// `bg-` followed by a 10-hex-digit VM id.
fn is_vm_tap(name: &str) -> bool {
    name.strip_prefix(TAP_PREFIX)
        .is_some_and(|id| id.len() == 10 && id.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The VM id in `<run_dir>/vms/<id>/api.sock`.
fn id_from_run_path(run_dir: &Path, sock: &Path) -> Option<String> {
    let rel = sock.strip_prefix(run_dir.join("vms")).ok()?;
    Some(
        rel.components()
            .next()?
            .as_os_str()
            .to_string_lossy()
            .into_owned(),
    )
}

fn read_dir(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_banger_vm_taps() {
        assert!(is_vm_tap("bg-0123456789"));
        assert!(!is_vm_tap("bg-xyz"));
        assert!(!is_vm_tap("bgpool0"));
        assert!(!is_vm_tap("bg-0123456789a"));
    }

    #[test]
    fn finds_vm_id_in_socket_path() {
        let id = id_from_run_path(
            Path::new("/run/banger"),
            Path::new("/run/banger/vms/abc/api.sock"),
        );
        assert_eq!(id.as_deref(), Some("abc"));
        assert_eq!(
            id_from_run_path(Path::new("/run/banger"), Path::new("/elsewhere/api.sock")),
            None
        );
    }
}
