//! The root disk's block device for a dm-snapshot VM: a read-only loop
//! device over the image's rootfs, a loop device over the VM's COW file,
//! and the snapshot `banger-<id>` over both. Other strategies have no
//! runtime device: the VMM opens the VM's root file directly, or (overlay)
//! the image's rootfs, read-only. A commit of a stopped dm-snapshot VM
//! brings the snapshot up read-only to read it, and releases it after.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{Journal, Live, Removal, Resource};
use crate::state::handles::Handles;
use crate::state::layout::{self, Name};
use crate::state::model::{CowStrategy, Vm};
use crate::vm::{Ctx, ImageFiles, VmFiles};

pub struct RootDevice;

/// Brings up the root disk for this start and returns the path the VMM opens.
pub fn attach(ctx: &Ctx, vm: &Vm, image: &ImageFiles, journal: &mut Journal) -> Result<PathBuf> {
    match vm.cow_strategy {
        Some(CowStrategy::DmSnapshot) => snapshot(ctx, vm, image, journal, false),
        Some(CowStrategy::Overlay) => Ok(image.rootfs.clone()),
        _ => Ok(VmFiles::of(&ctx.paths, vm).root_disk),
    }
}

/// Runs `read` on the root disk of a stopped dm-snapshot VM as its guest
/// sees it: the snapshot made read-only over read-only loop devices,
/// recorded in the VM's journal as a start records it, and released with
/// the journal afterwards, whatever `read` returned.
pub fn with_read_only_snapshot<T>(
    ctx: &Ctx,
    vm: &Vm,
    image: &ImageFiles,
    read: impl FnOnce(&Path) -> Result<T>,
) -> Result<T> {
    let vm_dir = ctx.paths.vm_dir(&vm.id);
    let mut journal = Journal::new(
        &vm_dir,
        Handles {
            cow_strategy: vm.cow_strategy,
            ..Handles::default()
        },
    );
    let result = snapshot(ctx, vm, image, &mut journal, true).and_then(|dev| read(&dev));
    let released = RootDevice
        .release(ctx, vm, journal.handles())
        .and_then(|()| Ok(Handles::remove(&vm_dir)?));
    let value = result?;
    released.with_context(|| format!("cannot release VM {}'s root device", vm.name))?;
    Ok(value)
}

/// The snapshot `banger-<home>-<id>` over a read-only loop device of the
/// image's rootfs and one of the VM's COW file (`read_only`: that one too,
/// and the snapshot's tables), each recorded in `journal`.
fn snapshot(
    ctx: &Ctx,
    vm: &Vm,
    image: &ImageFiles,
    journal: &mut Journal,
    read_only: bool,
) -> Result<PathBuf> {
    if !ctx.host.disks.dm_available() {
        bail!(
            "VM {} keeps its root disk as a device-mapper snapshot, but device-mapper is not available on this host",
            vm.name
        );
    }
    let files = VmFiles::of(&ctx.paths, vm);
    let base = ctx.host.disks.attach_loop(&image.rootfs, true)?;
    journal.record(|h| h.base_loop = Some(base.clone()))?;
    let cow = ctx.host.disks.attach_loop(&files.cow, read_only)?;
    let name = layout::dm(&ctx.home_tag(), &vm.id);
    journal.record(|h| {
        h.cow_loop = Some(cow.clone());
        h.dm_name = Some(name.clone());
    })?;
    let dev = ctx
        .host
        .disks
        .create_snapshot(&name, &base, &cow, vm.disk_size, read_only)?;
    journal.record(|h| h.dm_dev = Some(dev.clone()))?;
    Ok(dev)
}

/// The loop devices backed by `file` (none when it does not exist).
fn backed_by(ctx: &Ctx, file: &std::path::Path) -> Vec<PathBuf> {
    if !file.exists() {
        return Vec::new();
    }
    ctx.host.disks.loops_backed_by(file).unwrap_or_default()
}

impl Resource for RootDevice {
    fn kind(&self) -> &'static str {
        "root device"
    }

    /// Removes the VM's snapshot under either spelling of its name, then
    /// detaches the loop devices backed by its COW file and those the
    /// journal names that are backed by its image's rootfs: a loop device
    /// over anything else is never detached.
    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
        let mut errors = Vec::new();
        let has_dm = handles.dm_name.is_some() || vm.cow_strategy == Some(CowStrategy::DmSnapshot);
        if has_dm {
            for name in [
                layout::dm(&ctx.home_tag(), &vm.id),
                layout::legacy_dm(&vm.id),
            ] {
                if let Err(e) = ctx.host.disks.remove_snapshot(&name) {
                    errors.push(format!("dm device {name}: {e:#}"));
                }
            }
        }
        let cow = VmFiles::of(&ctx.paths, vm).cow;
        let mut loops = backed_by(ctx, &cow);
        if let Some(base) = &handles.base_loop
            && let Ok(image) = ctx.store.image(&vm.image)
            && backed_by(ctx, &ImageFiles::of(&ctx.paths, &image).rootfs).contains(base)
        {
            loops.push(base.clone());
        }
        loops.sort();
        loops.dedup();
        for dev in loops {
            if let Err(e) = ctx.host.disks.detach_loop(&dev) {
                errors.push(format!("loop device {}: {e:#}", dev.display()));
            }
        }
        if !errors.is_empty() {
            bail!("{}", errors.join("; "));
        }
        Ok(())
    }

    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
        let mut removals = Vec::new();
        if ctx.host.disks.dm_available() {
            let home = ctx.home_tag();
            for name in ctx.host.disks.list_snapshots()? {
                let owner = match Name::parse(&name) {
                    Some(Name::Dm(owner) | Name::DmBase(owner)) => owner,
                    _ => continue,
                };
                // Another home's devices are that home's to sweep.
                if !owner.is_of(&home) || live.running.contains(&owner.id) {
                    continue;
                }
                if !dry_run {
                    ctx.host
                        .disks
                        .remove_snapshot(&Name::Dm(owner.clone()).format())?;
                }
                removals.push(Removal::new("dm-device", name, "no running VM uses it"));
            }
        }
        for (dev, backing) in ctx.host.disks.list_loops()? {
            if !backing.starts_with(&ctx.paths.home) || live.loops.contains(&dev) {
                continue;
            }
            if !dry_run {
                ctx.host.disks.detach_loop(&dev)?;
            }
            removals.push(Removal::new(
                "loop-device",
                dev.display().to_string(),
                format!("backs {}", backing.display()),
            ));
        }
        Ok(removals)
    }
}
