//! The root disk's block device for a dm-snapshot VM: a read-only loop
//! device over the image's rootfs, a loop device over the VM's COW file,
//! and the snapshot `banger-<id>` over both. Other strategies have no
//! runtime device: the VMM opens the VM's root file directly.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{Journal, Live, Removal, Resource};
use crate::state::handles::Handles;
use crate::state::layout::{self, Name};
use crate::state::model::{CowStrategy, Vm};
use crate::vm::{Ctx, ImageFiles, VmFiles};

pub struct RootDevice;

/// Brings up the root disk for this start and returns the path the VMM opens.
pub fn attach(ctx: &Ctx, vm: &Vm, image: &ImageFiles, journal: &mut Journal) -> Result<PathBuf> {
    let files = VmFiles::of(&ctx.paths, vm);
    if vm.cow_strategy != Some(CowStrategy::DmSnapshot) {
        return Ok(files.root_disk);
    }
    if !ctx.host.disks.dm_available() {
        bail!(
            "VM {} keeps its root disk as a device-mapper snapshot, but device-mapper is not available on this host",
            vm.name
        );
    }
    let base = ctx.host.disks.attach_loop(&image.rootfs, true)?;
    journal.record(|h| h.base_loop = Some(base.clone()))?;
    let cow = ctx.host.disks.attach_loop(&files.cow, false)?;
    let name = layout::dm(&vm.id);
    journal.record(|h| {
        h.cow_loop = Some(cow.clone());
        h.dm_name = Some(name.clone());
    })?;
    let dev = ctx
        .host
        .disks
        .create_snapshot(&name, &base, &cow, vm.disk_size)?;
    journal.record(|h| h.dm_dev = Some(dev.clone()))?;
    Ok(dev)
}

impl Resource for RootDevice {
    fn kind(&self) -> &'static str {
        "root device"
    }

    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
        let mut errors = Vec::new();
        let has_dm = handles.dm_name.is_some() || vm.cow_strategy == Some(CowStrategy::DmSnapshot);
        if has_dm && let Err(e) = ctx.host.disks.remove_snapshot(&layout::dm(&vm.id)) {
            errors.push(format!("dm device: {e:#}"));
        }
        let mut loops: Vec<PathBuf> = handles
            .cow_loop
            .iter()
            .chain(handles.base_loop.iter())
            .cloned()
            .collect();
        let cow = VmFiles::of(&ctx.paths, vm).cow;
        if cow.exists() {
            loops.extend(ctx.host.disks.loops_backed_by(&cow).unwrap_or_default());
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
            for name in ctx.host.disks.list_snapshots()? {
                let owner = match Name::parse(&name) {
                    Some(Name::Dm(id) | Name::DmBase(id)) => id,
                    _ => continue,
                };
                if live.running.contains(&owner) {
                    continue;
                }
                if !dry_run {
                    ctx.host.disks.remove_snapshot(&layout::dm(&owner))?;
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
