//! The files of an image and of a VM, named once.

use std::path::PathBuf;

use crate::host::image::{INITRD, MANIFEST, ROOTFS, VMLINUX, WORK_SEED};
use crate::state::model::{Image, Vm};
use crate::state::paths::Paths;

/// The image's files.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    pub dir: PathBuf,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub rootfs: PathBuf,
    pub work_seed: PathBuf,
    pub manifest: PathBuf,
}

impl ImageFiles {
    /// Refuses an image whose kernel, initrd, root filesystem or work seed
    /// is not a regular file (a FIFO or device there would be read forever
    /// or written through).
    pub fn check(&self, image: &str) -> anyhow::Result<()> {
        let files = [
            Some(&self.kernel),
            self.initrd.as_ref(),
            Some(&self.rootfs),
            Some(&self.work_seed),
        ];
        for path in files.into_iter().flatten() {
            let meta = std::fs::symlink_metadata(path).map_err(|e| {
                anyhow::anyhow!("image {image} is incomplete: {}: {e}", path.display())
            })?;
            if !meta.is_file() {
                anyhow::bail!(
                    "image {image} is damaged: {} is not a regular file; rebuild or re-import it",
                    path.display()
                );
            }
        }
        Ok(())
    }

    pub fn of(paths: &Paths, image: &Image) -> Self {
        let mut files = Self::in_dir(paths.image_dir(&image.name));
        if !image.has_initrd {
            files.initrd = None;
        }
        files
    }

    /// The files an image directory holds (or will hold, while staging).
    pub fn in_dir(dir: PathBuf) -> Self {
        Self {
            kernel: dir.join(VMLINUX),
            initrd: Some(dir.join(INITRD)),
            rootfs: dir.join(ROOTFS),
            work_seed: dir.join(WORK_SEED),
            manifest: dir.join(MANIFEST),
            dir,
        }
    }
}

/// Per-VM durable files.
#[derive(Debug, Clone)]
pub struct VmFiles {
    pub dir: PathBuf,
    /// Sparse COW store (dm-snapshot).
    pub cow: PathBuf,
    /// The root disk: a full clone of the image's rootfs (reflink or copy).
    pub root_disk: PathBuf,
    /// The overlay's upper disk: the VM's writes over the image's rootfs.
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The seed drive banger's initramfs reads (see `host::image::seed`).
    pub seed: PathBuf,
    /// The public half of the VM's SSH host key, pinned before its first boot.
    pub host_key_pub: PathBuf,
    pub console_log: PathBuf,
    pub vmm_log: PathBuf,
    pub metrics: PathBuf,
}

impl VmFiles {
    pub fn of(paths: &Paths, vm: &Vm) -> Self {
        let dir = paths.vm_dir(&vm.id);
        Self {
            cow: dir.join("root.cow"),
            root_disk: dir.join("root.ext4"),
            upper: dir.join("upper.ext4"),
            work: dir.join("work.ext4"),
            seed: dir.join("seed.cpio"),
            host_key_pub: dir.join("ssh_host_ed25519_key.pub"),
            console_log: dir.join("console.log"),
            vmm_log: dir.join("firecracker.log"),
            metrics: dir.join("metrics.json"),
            dir,
        }
    }
}
