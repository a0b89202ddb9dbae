//! `gc`'s sweep, for cron: delete expired and abandoned VMs, reconcile the
//! rest, then release every runtime resource no live VM owns (the same list
//! teardown walks), and remove leftover lock files, VM directories without a
//! VM (after a grace period) and image staging directories. Only names
//! banger could have made are touched, and never anything of a VM another
//! command holds or is creating: gc holds the gc lock exclusively (a create
//! holds it shared until its row exists) and every VM's lock it took until
//! the sweep ends, so no VM appears or starts under it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Result;

use crate::host::procs;
use crate::state::handles::Handles;
use crate::state::layout::Name;
use crate::state::lock;
use crate::state::model::now;
use crate::vm::resources::{self, Live, Removal, remove_dir_if_present};
use crate::vm::{Ctx, LockedVm, VmRead};

/// How old a VM directory without a VM must be before gc removes it.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(10 * 60);

/// Finds (and unless `dry_run`, removes) everything gc is responsible for.
pub fn collect(ctx: &Ctx, dry_run: bool) -> Result<Vec<Removal>> {
    let _sweeping = lock::acquire(
        &ctx.paths.gc_lock(),
        "gc",
        lock::DEFAULT_TIMEOUT,
        &|_, _| {},
    )?;
    let mut removals = Vec::new();
    let mut live = Live::default();
    let pools = super::pool::GcView::read(ctx)?;
    // An unusable row may still belong to a VM that runs: what its id
    // names is left alone until `vm delete` removes the row.
    for bad in ctx.store.bad_vms()? {
        if let Some(id) = bad.vm_id() {
            live.known.insert(id.clone());
            live.add_running(&id, &Handles::default());
        }
    }
    // Held until the sweep ends: no VM gc looked at starts meanwhile.
    let mut held_guards = Vec::new();
    let mut held_vms = Vec::new();
    for vm in ctx.store.list_vms()? {
        let Some(guard) = lock::try_acquire(&ctx.paths.vm_lock(&vm.id))? else {
            // Another command holds it: it owns whatever it may have made.
            let handles = Handles::load_or_default(&ctx.paths.vm_dir(&vm.id));
            live.known.insert(vm.id.clone());
            live.add_running(&vm.id, &handles);
            continue;
        };
        let Some(fresh) = ctx.store.vm_by_id(&vm.id)? else {
            // Deleted since the list was read; leftovers are swept below.
            continue;
        };
        let read = if dry_run {
            held_guards.push(guard);
            VmRead::observe(ctx, fresh)
        } else {
            let locked = LockedVm::with_guard(ctx, fresh, guard)?;
            let read = locked.read();
            if let Some(reason) = why_delete(&read, &pools) {
                let name = read.vm.name.to_string();
                locked.delete(true)?;
                removals.push(Removal::new("vm", name, reason));
                continue;
            }
            held_vms.push(locked);
            read
        };
        if dry_run && let Some(reason) = why_delete(&read, &pools) {
            removals.push(Removal::new("vm", read.vm.name.to_string(), reason));
            continue;
        }
        live.known.insert(read.vm.id.clone());
        if read.observed.pid.is_some() {
            live.add_running(&read.vm.id, &read.observed.handles);
        }
    }
    removals.extend(resources::sweep(ctx, &live, dry_run)?);
    removals.extend(sweep_vm_dirs(ctx, &live, dry_run)?);
    removals.extend(sweep_lock_files(ctx, &live, dry_run)?);
    removals.extend(sweep_staging(ctx, dry_run)?);
    removals.extend(sweep_unregistered_images(ctx, dry_run)?);
    drop(held_vms);
    drop(held_guards);
    removals.extend(refill_pools(ctx, dry_run)?);
    Ok(removals)
}

/// Why gc deletes this VM, if it does: its TTL expired, its create (or its
/// claim from a pool) died midway, or it is a pool VM to replace.
fn why_delete(read: &VmRead, pools: &super::pool::GcView) -> Option<String> {
    if read.vm.expires_at.is_some_and(|t| t <= now()) {
        return Some("its --ttl expired".into());
    }
    if let Some(why) = read.status().abandoned(read.observed.pid.is_some()) {
        return Some(why.into());
    }
    pools.why_replace(read)
}

/// Starts a fill for pools with fewer VMs than their size (after the
/// sweep, which may have deleted some).
fn refill_pools(ctx: &Ctx, dry_run: bool) -> Result<Vec<Removal>> {
    let short = super::pool::short(ctx)?;
    if short.is_empty() {
        return Ok(Vec::new());
    }
    if !dry_run {
        super::pool::start_fill(ctx)?;
    }
    Ok(short
        .into_iter()
        .map(|(image, have, size)| Removal::refill(image, format!("{have} of {size} VMs")))
        .collect())
}

/// Lock files of VMs that no longer exist (and that nobody holds).
fn sweep_lock_files(ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
    let mut removals = Vec::new();
    for entry in read_dir(&ctx.paths.locks_dir()) {
        let Some(Name::VmLock(id)) = entry.file_name().to_str().and_then(Name::parse) else {
            continue;
        };
        if live.known.contains(&id) || live.running.contains(&id) {
            continue;
        }
        let Some(guard) = lock::try_acquire(&entry.path())? else {
            continue;
        };
        // Under the lock: a VM whose row exists keeps its lock file.
        if ctx.store.vm_by_id(&id)?.is_some() {
            continue;
        }
        if !dry_run {
            guard.remove()?;
        }
        removals.push(Removal::new(
            "lock-file",
            entry.path().display().to_string(),
            "no such VM",
        ));
    }
    Ok(removals)
}

/// VM directories (`<home>/vms/<id>/`) without a VM: removed once they are
/// [`ORPHAN_GRACE`] old (by modification time), reported as kept before.
/// Never one whose lock someone holds, nor one whose row exists.
fn sweep_vm_dirs(ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
    let mut removals = Vec::new();
    for entry in read_dir(&ctx.paths.vms_dir()) {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(crate::state::model::VmId::parse)
        else {
            continue;
        };
        if live.known.contains(&id)
            || live.running.contains(&id)
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let lock_path = ctx.paths.vm_lock(&id);
        let had_lock = lock_path.exists();
        let Some(guard) = lock::try_acquire(&lock_path)? else {
            continue;
        };
        if ctx.store.vm_by_id(&id)?.is_some() {
            continue;
        }
        let target = entry.path().display().to_string();
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .unwrap_or_default();
        let grace = crate::state::parse::format_duration(ORPHAN_GRACE);
        if age < ORPHAN_GRACE {
            if !had_lock {
                guard.remove()?;
            }
            removals.push(Removal::kept(
                "vm-files",
                target,
                format!("no such VM; removed once {grace} old"),
            ));
            continue;
        }
        if !dry_run {
            remove_dir_if_present(&entry.path())?;
        }
        if !dry_run || !had_lock {
            guard.remove()?;
        }
        removals.push(Removal::new(
            "vm-files",
            target,
            format!("no such VM, for over {grace}"),
        ));
    }
    Ok(removals)
}

/// Half-written images from interrupted builds, imports or commits.
fn sweep_staging(ctx: &Ctx, dry_run: bool) -> Result<Vec<Removal>> {
    let mut removals = Vec::new();
    for entry in read_dir(&ctx.paths.images_dir()) {
        let Some(Name::Staging { pid, .. }) = entry.file_name().to_str().and_then(Name::parse)
        else {
            continue;
        };
        if procs::is_alive(pid) {
            continue;
        }
        if !dry_run {
            remove_dir_if_present(&entry.path())?;
        }
        removals.push(Removal::new(
            "image-staging",
            entry.path().display().to_string(),
            "interrupted image build, import or commit",
        ));
    }
    Ok(removals)
}

/// Image directories without a row: an image commit that died between
/// moving its files into place and registering them. Skipped while someone
/// holds the image's lock (a commit under way).
fn sweep_unregistered_images(ctx: &Ctx, dry_run: bool) -> Result<Vec<Removal>> {
    let mut removals = Vec::new();
    for entry in read_dir(&ctx.paths.images_dir()) {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if crate::state::parse::image_name(&name).is_err()
            || !entry.file_type().is_ok_and(|t| t.is_dir())
            || ctx.store.find_image(&name)?.is_some()
        {
            continue;
        }
        let Some(_lock) = lock::try_acquire(&ctx.paths.image_lock(&name))? else {
            continue;
        };
        if ctx.store.find_image(&name)?.is_some() {
            continue;
        }
        if !dry_run {
            remove_dir_if_present(&entry.path())?;
        }
        removals.push(Removal::new(
            "image-files",
            entry.path().display().to_string(),
            "interrupted image commit (no image registered)",
        ));
    }
    Ok(removals)
}

fn read_dir(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().collect())
        .unwrap_or_default()
}
