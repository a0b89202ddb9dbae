//! Building image files from packages: kernel, initramfs, rootfs, work seed.
//!
//! [`build`] writes `vmlinux`, `initrd.img` (when built), `rootfs.ext4`,
//! `work-seed.ext4` and `image.json` into an output directory. Nothing is
//! installed on the host: packages are fetched with `apt-get download` and
//! unpacked with `dpkg-deb -x`, the rootfs is made by `debootstrap` in a
//! scratch directory and written with `mkfs.ext4 -d`.

mod build;
pub(crate) mod cpio;
mod guest;
mod initramfs;
mod kernel;
mod manifest;
mod packages;
mod rootfs;
mod scratch;
pub mod seed;

use std::path::PathBuf;

pub use build::build;
#[cfg(test)]
pub(crate) use initramfs::MARKER;
pub use initramfs::is_banger_initramfs;
pub use kernel::{check_elf, check_pvh_note, kernel_release, unpack_vmlinuz};
pub use manifest::{Manifest, ManifestFile};

/// File names inside an image directory.
pub const VMLINUX: &str = "vmlinux";
pub const INITRD: &str = "initrd.img";
pub const ROOTFS: &str = "rootfs.ext4";
pub const WORK_SEED: &str = "work-seed.ext4";
pub const MANIFEST: &str = "image.json";

/// What `banger image build` asks for.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Debian suite passed to debootstrap, e.g. `bookworm`.
    pub suite: String,
    /// A user's own ELF `vmlinux`; `None` fetches Debian's cloud kernel.
    pub kernel: Option<PathBuf>,
    /// An initrd to ship with `kernel`, used as given.
    pub initrd: Option<PathBuf>,
    /// Size of `rootfs.ext4` in bytes; `None` sizes it from its content.
    pub size: Option<u64>,
    /// Extra Debian packages installed into the rootfs.
    pub packages: Vec<String>,
    /// The `banger-agent` binary installed into the rootfs.
    pub agent_binary: PathBuf,
    /// Where downloaded packages and debootstrap tarballs are kept between builds.
    pub cache_dir: PathBuf,
}

/// Receives the build's progress; the caller decides how to show it.
pub trait Progress {
    /// A new stage starts: `download`, `unpack`, `initramfs`, `debootstrap`,
    /// `packages`, `agent`, `mkfs`, `checksum`.
    fn stage(&self, name: &str);
    /// Something worth telling within the current stage.
    fn detail(&self, msg: &str);
}

/// Why an image build failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid build options: {0}")]
    InvalidOptions(String),
    #[error("output directory {path} is not empty")]
    OutDirNotEmpty { path: PathBuf },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Run(#[from] crate::host::run::RunError),
    #[error("Debian's package index has no package {package}; check the suite, or pass --kernel")]
    PackageNotFound { package: String },
    #[error("{path} holds no {what}")]
    MissingFile { path: PathBuf, what: &'static str },
    #[error("not a bzImage kernel: {0}")]
    BadBzImage(String),
    #[error("corrupt LZ4 payload at offset {offset}: {reason}")]
    Lz4 { offset: usize, reason: String },
    #[error("{what} is not an ELF kernel (Firecracker loads an uncompressed vmlinux)")]
    NotElf { what: String },
    #[error(
        "{what} has no Xen PVH ELF note (type 18, \"Xen\"); Firecracker needs a kernel built with CONFIG_PVH=y"
    )]
    NoPvhNote { what: String },
    #[error("kernel {kernel_version} has no module {module} (neither built in nor in modules.dep)")]
    ModuleMissing {
        module: String,
        kernel_version: String,
    },
    #[error(transparent)]
    Disk(#[from] crate::host::disk::DiskError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{op} image manifest {path}")]
    Manifest {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ImageError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
