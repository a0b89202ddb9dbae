//! A stopped VM's disks as its guest saw them, written out as new files (for
//! `image commit`): the root filesystem whatever the VM's cow strategy, and
//! the work disk. The VM's own files are only ever read.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::{ImageFiles, LockedVm, VmFiles, resources};
use crate::host::disk::ext4;
use crate::state::model::CowStrategy;

/// Where an exported root filesystem came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootExport {
    /// A clone of the VM's own root disk (copy or reflink).
    Clone,
    /// The contents of its device-mapper snapshot.
    Snapshot,
    /// The merged view of its overlay root.
    Overlay,
    /// The image's rootfs: an overlay VM that never booted changed nothing.
    Unchanged,
}

impl RootExport {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Clone => "a clone of its root disk",
            Self::Snapshot => "the contents of its device-mapper snapshot",
            Self::Overlay => "the merged view of its overlay root",
            Self::Unchanged => "its image's rootfs (the VM never changed it)",
        }
    }
}

impl LockedVm<'_> {
    /// Writes the root filesystem the VM's guest sees to the new file `out`:
    /// a clone of a copy or reflink root disk; the contents of a
    /// dm-snapshot root, brought up read-only for the copy; the merged view
    /// of an overlay root, at least as large as `image`'s rootfs; or, for an
    /// overlay VM that never booted (a blank upper disk), `image`'s rootfs.
    /// Refused unless the VM is stopped.
    pub fn export_root(&self, image: &ImageFiles, out: &Path) -> Result<RootExport> {
        let (ctx, vm) = (self.ctx(), self.vm());
        self.status().can_commit(vm.name.as_str())?;
        let disks = &ctx.host.disks;
        let files = VmFiles::of(&ctx.paths, vm);
        let size = |path: &Path| super::locked::file_size(path);
        match vm.cow_strategy {
            Some(CowStrategy::Copy | CowStrategy::Reflink) => {
                disks.clone_file(&files.root_disk, out, size(&files.root_disk)?)?;
                Ok(RootExport::Clone)
            }
            Some(CowStrategy::DmSnapshot) => {
                resources::with_read_only_snapshot(ctx, vm, image, |dev| {
                    disks.copy_device(dev, out, vm.disk_size)
                })?;
                Ok(RootExport::Snapshot)
            }
            Some(CowStrategy::Overlay) if !ext4::is_ext4(&files.upper)? => {
                disks.clone_file(&image.rootfs, out, size(&image.rootfs)?)?;
                Ok(RootExport::Unchanged)
            }
            Some(CowStrategy::Overlay) => {
                disks
                    .merge_overlay(&image.rootfs, &files.upper, out, size(&image.rootfs)?)
                    .with_context(|| format!("cannot read VM {}'s overlay root", vm.name))?;
                Ok(RootExport::Overlay)
            }
            None => bail!("VM {} has no root disk yet", vm.name),
        }
    }

    /// Clones the VM's work disk to the new file `out`. Refused unless the
    /// VM is stopped.
    pub fn export_work(&self, out: &Path) -> Result<()> {
        let (ctx, vm) = (self.ctx(), self.vm());
        self.status().can_commit(vm.name.as_str())?;
        let work = VmFiles::of(&ctx.paths, vm).work;
        ctx.host
            .disks
            .clone_file(&work, out, super::locked::file_size(&work)?)?;
        Ok(())
    }
}
