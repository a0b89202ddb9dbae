//! `build`: the stages of an image build, from packages to a finished image directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{SecondsFormat, Utc};

use super::manifest::{Manifest, ManifestFile};
use super::scratch::{self, ScratchDir};
use crate::host::disk::ext4;
use crate::host::run::run;

use super::{BuildOptions, INITRD, ImageError, MANIFEST, Progress, ROOTFS, VMLINUX, WORK_SEED};
use super::{guest, initramfs, kernel, packages, rootfs};

const BUSYBOX_PACKAGE: &str = "busybox-static";

/// Builds an image into `out_dir`: `vmlinux`, `initrd.img` (unless `--kernel`
/// comes without `--initrd`), `rootfs.ext4`, `work-seed.ext4`, `image.json`.
///
/// `out_dir` must be absent or empty. On failure it is left as it was found
/// (absent or empty) and every scratch directory is removed.
pub fn build(
    opts: &BuildOptions,
    out_dir: &Path,
    progress: &dyn Progress,
) -> Result<Manifest, ImageError> {
    validate(opts)?;
    let output = OutputDir::prepare(out_dir)?;
    scratch::sweep_stale(&opts.cache_dir.join("tmp"));
    let scratch = ScratchDir::new(&opts.cache_dir.join("tmp"), "build")?;

    let kernel = match &opts.kernel {
        Some(path) => user_kernel(path, opts.initrd.as_deref(), out_dir)?,
        None => debian_kernel(
            &opts.cache_dir,
            &opts.suite,
            scratch.path(),
            out_dir,
            progress,
        )?,
    };

    let include = rootfs::include_list(&opts.packages);
    let tree = scratch.path().join("rootfs");
    rootfs::debootstrap(&opts.suite, &include, &opts.cache_dir, &tree, progress)?;

    progress.stage("agent");
    if let Some(modules_dir) = &kernel.modules_dir {
        progress.detail(&format!("installing kernel modules {}", kernel.release));
        guest::install_modules(&tree, modules_dir, &kernel.release)?;
    }
    progress.detail(&format!("installing {}", opts.agent_binary.display()));
    guest::configure_guest(&tree, &opts.agent_binary)?;

    progress.stage("mkfs");
    let usage = rootfs::tree_usage(&tree)?;
    let size = match opts.size {
        Some(size) if size < usage + usage / 10 => {
            return Err(ImageError::InvalidOptions(format!(
                "--size {} MiB cannot hold the root filesystem's {} MiB; leave it out or give at least {} MiB",
                size >> 20,
                usage >> 20,
                rootfs::default_size(usage) >> 20
            )));
        }
        Some(size) => size,
        None => rootfs::default_size(usage),
    };
    progress.detail(&format!("{ROOTFS}: {} MiB", size >> 20));
    ext4::mkfs_from_dir(&tree, &out_dir.join(ROOTFS), size, "rootfs")?;
    // The same skeleton of /root as an imported image gets.
    ext4::make_work_seed(&out_dir.join(WORK_SEED))?;

    progress.stage("checksum");
    let mut files = BTreeMap::new();
    let mut names = vec![VMLINUX, ROOTFS, WORK_SEED];
    if kernel.has_initrd {
        names.push(INITRD);
    }
    for name in names {
        files.insert(name.to_string(), ManifestFile::of(&out_dir.join(name))?);
    }
    let agent = ManifestFile::of(&opts.agent_binary)?;
    let manifest = Manifest {
        kernel_version: kernel.release,
        suite: opts.suite.clone(),
        packages: include,
        files,
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        agent_sha256: agent.sha256,
        created_at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    manifest.write(&out_dir.join(MANIFEST))?;
    output.keep();
    Ok(manifest)
}

/// Rejects options that could never build, before any side effect.
fn validate(opts: &BuildOptions) -> Result<(), ImageError> {
    let invalid = |msg: String| Err(ImageError::InvalidOptions(msg));
    // It reaches debootstrap's command line: never let it read as an option.
    let suite_ok = opts.suite.starts_with(|c: char| c.is_ascii_alphanumeric())
        && opts
            .suite
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !suite_ok {
        return invalid(format!("suite {:?} is not a Debian suite name", opts.suite));
    }
    // Debian policy: lowercase letters, digits, '+', '-' and '.', starting alphanumeric.
    for p in &opts.packages {
        let ok = p.len() >= 2
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.')
            });
        if !ok {
            return invalid(format!("{p:?} is not a Debian package name"));
        }
    }
    if opts.initrd.is_some() && opts.kernel.is_none() {
        return invalid("--initrd needs --kernel".to_string());
    }
    if opts.size.is_some_and(|s| s < 64 << 20) {
        return invalid("--size must be at least 64M".to_string());
    }
    if !opts.agent_binary.is_file() {
        return invalid(format!(
            "agent binary {} does not exist",
            opts.agent_binary.display()
        ));
    }
    Ok(())
}

/// The kernel half of an image, as the rootfs stage needs it.
struct KernelParts {
    release: String,
    /// `lib/modules/<release>` of the Debian kernel, installed into the rootfs.
    modules_dir: Option<PathBuf>,
    has_initrd: bool,
}

/// Uses the user's `vmlinux` (and initrd) as given; no modules are installed.
fn user_kernel(
    path: &Path,
    initrd: Option<&Path>,
    out_dir: &Path,
) -> Result<KernelParts, ImageError> {
    let image = fs::read(path).map_err(ImageError::io("read kernel", path))?;
    kernel::check_elf(&image, &path.display().to_string())?;
    let dest = out_dir.join(VMLINUX);
    fs::write(&dest, &image).map_err(ImageError::io("write", &dest))?;
    if let Some(initrd) = initrd {
        let dest = out_dir.join(INITRD);
        fs::copy(initrd, &dest).map_err(ImageError::io("copy initrd", initrd))?;
    }
    Ok(KernelParts {
        release: kernel::kernel_release(&image).unwrap_or_else(|| "unknown".to_string()),
        modules_dir: None,
        has_initrd: initrd.is_some(),
    })
}

/// Fetches Debian's cloud kernel and busybox, writes `vmlinux` and `initrd.img`.
fn debian_kernel(
    cache_dir: &Path,
    suite: &str,
    scratch: &Path,
    out_dir: &Path,
    progress: &dyn Progress,
) -> Result<KernelParts, ImageError> {
    progress.stage("download");
    let mirror = rootfs::host_mirror(suite);
    progress.detail(&format!("package index of {suite} from {mirror}"));
    let apt = packages::Apt::for_suite(cache_dir, &mirror, suite)?;
    let package = packages::resolve_kernel_package(&apt)?;
    let mut debs = Vec::new();
    for name in [package.as_str(), BUSYBOX_PACKAGE] {
        let (deb, cached) = packages::fetch_deb(&apt, name, cache_dir)?;
        let how = if cached { "cached" } else { "downloaded" };
        progress.detail(&format!("{how} {}", deb.display()));
        debs.push(deb);
    }

    progress.stage("unpack");
    let kernel_root = scratch.join("kernel");
    packages::extract_deb(&debs[0], &kernel_root)?;
    let (vmlinuz, release) = find_vmlinuz(&kernel_root.join("boot"))?;
    let bzimage = fs::read(&vmlinuz).map_err(ImageError::io("read", &vmlinuz))?;
    let vmlinux = kernel::unpack_vmlinuz(&bzimage)?;
    let dest = out_dir.join(VMLINUX);
    fs::write(&dest, &vmlinux).map_err(ImageError::io("write", &dest))?;
    progress.detail(&format!("kernel {release}: {} MiB", vmlinux.len() >> 20));
    let modules_dir = prepare_modules(&kernel_root, &release)?;

    progress.stage("initramfs");
    let busybox_root = scratch.join("busybox");
    packages::extract_deb(&debs[1], &busybox_root)?;
    let loaded = initramfs::write_initramfs(
        &out_dir.join(INITRD),
        &modules_dir,
        &busybox_root.join("bin/busybox"),
    )?;
    progress.detail(&format!("modules: {}", loaded.join(" ")));

    Ok(KernelParts {
        release,
        modules_dir: Some(modules_dir),
        has_initrd: true,
    })
}

/// The `vmlinuz-<release>` in the package's `/boot`, and its release.
fn find_vmlinuz(boot: &Path) -> Result<(PathBuf, String), ImageError> {
    let entries = fs::read_dir(boot).map_err(ImageError::io("read directory", boot))?;
    for entry in entries {
        let entry = entry.map_err(ImageError::io("read directory", boot))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            return Ok((entry.path(), release.to_string()));
        }
    }
    Err(ImageError::MissingFile {
        path: boot.to_path_buf(),
        what: "vmlinuz-*",
    })
}

/// Runs `depmod` over the unpacked package (which ships no `modules.dep`)
/// and returns its `lib/modules/<release>`.
fn prepare_modules(kernel_root: &Path, release: &str) -> Result<PathBuf, ImageError> {
    // Newer packages ship usr/lib/modules; depmod -b looks under lib/modules.
    let lib = kernel_root.join("lib");
    if !lib.exists() && kernel_root.join("usr/lib/modules").is_dir() {
        std::os::unix::fs::symlink("usr/lib", &lib).map_err(ImageError::io("symlink", &lib))?;
    }
    run(Command::new("depmod")
        .arg("-b")
        .arg(kernel_root)
        .arg(release))?;
    Ok(lib.join("modules").join(release))
}

/// The output directory; unless kept, dropping it restores it to absent or empty.
struct OutputDir {
    path: PathBuf,
    created: bool,
    keep: bool,
}

impl OutputDir {
    fn prepare(path: &Path) -> Result<Self, ImageError> {
        let created = match fs::read_dir(path) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(ImageError::OutDirNotEmpty {
                        path: path.to_path_buf(),
                    });
                }
                false
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(path).map_err(ImageError::io("create directory", path))?;
                true
            }
            Err(e) => return Err(ImageError::io("read directory", path)(e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            created,
            keep: false,
        })
    }

    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for OutputDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if self.created {
            let _ = fs::remove_dir_all(&self.path);
            return;
        }
        if let Ok(entries) = fs::read_dir(&self.path) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn opts() -> BuildOptions {
        BuildOptions {
            suite: "bookworm".into(),
            kernel: None,
            initrd: None,
            size: None,
            packages: vec!["vim".into(), "g++".into()],
            agent_binary: PathBuf::from("/bin/sh"),
            cache_dir: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn accepts_sane_options() {
        validate(&opts()).unwrap();
    }

    #[test]
    fn rejects_bad_names_and_combinations() {
        let cases: Vec<(BuildOptions, &str)> = vec![
            (
                BuildOptions {
                    suite: "--no-check-gpg".into(),
                    ..opts()
                },
                "suite",
            ),
            (
                BuildOptions {
                    suite: "../x".into(),
                    ..opts()
                },
                "suite",
            ),
            (
                BuildOptions {
                    packages: vec!["vim,curl".into()],
                    ..opts()
                },
                "package",
            ),
            (
                BuildOptions {
                    packages: vec!["Vim".into()],
                    ..opts()
                },
                "package",
            ),
            (
                BuildOptions {
                    initrd: Some("/i".into()),
                    ..opts()
                },
                "--initrd needs --kernel",
            ),
            (
                BuildOptions {
                    size: Some(1 << 20),
                    ..opts()
                },
                "--size",
            ),
            (
                BuildOptions {
                    agent_binary: "/nonexistent/agent".into(),
                    ..opts()
                },
                "agent binary",
            ),
        ];
        for (o, want) in cases {
            let err = validate(&o).unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn output_dir_is_restored_unless_kept() {
        let base = std::env::temp_dir().join(format!("banger-out-{}", std::process::id()));
        let fresh = base.join("fresh");
        {
            let _out = OutputDir::prepare(&fresh).unwrap();
            fs::write(fresh.join(VMLINUX), b"x").unwrap();
        }
        assert!(!fresh.exists());

        let existing = base.join("existing");
        fs::create_dir_all(&existing).unwrap();
        {
            let _out = OutputDir::prepare(&existing).unwrap();
            fs::write(existing.join(VMLINUX), b"x").unwrap();
        }
        assert_eq!(fs::read_dir(&existing).unwrap().count(), 0);

        OutputDir::prepare(&existing).unwrap().keep();
        fs::write(existing.join(VMLINUX), b"x").unwrap();
        let err = OutputDir::prepare(&existing).err().unwrap();
        assert!(matches!(err, ImageError::OutDirNotEmpty { .. }));
        fs::remove_dir_all(&base).unwrap();
    }
}
