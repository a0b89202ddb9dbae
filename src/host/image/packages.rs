//! Fetching Debian packages with apt into banger's cache and unpacking them, never installing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::ImageError;
use super::scratch::ScratchDir;
use crate::host::run::run;
use crate::state::atomic;

/// The metapackage whose dependency names the current cloud kernel.
pub(crate) const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// The versioned kernel package `linux-image-cloud-amd64` depends on,
/// e.g. `linux-image-6.1.0-56-cloud-amd64`.
pub(crate) fn resolve_kernel_package() -> Result<String, ImageError> {
    let out = run(Command::new("apt-cache").args(["depends", KERNEL_METAPACKAGE]))?;
    versioned_dependency(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        ImageError::PackageNotFound {
            package: KERNEL_METAPACKAGE.to_string(),
        }
    })
}

/// The first `Depends: linux-image-*` line of `apt-cache depends` output.
fn versioned_dependency(depends: &str) -> Option<String> {
    depends.lines().find_map(|line| {
        let dep = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?
            .trim();
        (dep.starts_with("linux-image-") && !dep.starts_with('<')).then(|| dep.to_string())
    })
}

/// The `.deb` file name `apt-get download` gives the candidate of `package`.
fn candidate_file_name(package: &str) -> Result<String, ImageError> {
    let out = run(Command::new("apt-cache").args(["show", "--no-all-versions", package])).map_err(
        |_| ImageError::PackageNotFound {
            package: package.to_string(),
        },
    )?;
    deb_file_name(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        ImageError::PackageNotFound {
            package: package.to_string(),
        }
    })
}

/// `<package>_<version>_<arch>.deb` from an `apt-cache show` record, with the
/// epoch colon escaped as apt does (`%3a`).
fn deb_file_name(record: &str) -> Option<String> {
    let field = |name: &str| {
        record
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let package = field("Package")?;
    let version = field("Version")?.replace(':', "%3a");
    let arch = field("Architecture")?;
    Some(format!("{package}_{version}_{arch}.deb"))
}

/// Returns the cached `.deb` of `package`'s candidate version, downloading it
/// into `cache_dir/debs` first if missing. Returns the path and whether it was cached.
pub(crate) fn fetch_deb(package: &str, cache_dir: &Path) -> Result<(PathBuf, bool), ImageError> {
    let debs = cache_dir.join("debs");
    let file_name = candidate_file_name(package)?;
    let cached = debs.join(&file_name);
    if cached.is_file() {
        return Ok((cached, true));
    }
    fs::create_dir_all(&debs).map_err(ImageError::io("create directory", &debs))?;
    // Download beside the cache and rename, so an interrupted download leaves nothing behind.
    let partial = ScratchDir::new(&cache_dir.join("tmp"), "download")?;
    run(Command::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(partial.path()))?;
    let downloaded = partial.path().join(&file_name);
    atomic::persist(&downloaded, &cached)?;
    Ok((cached, false))
}

/// Unpacks `deb`'s files into `dir` with `dpkg-deb -x` (no maintainer scripts run).
pub(crate) fn extract_deb(deb: &Path, dir: &Path) -> Result<(), ImageError> {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_versioned_kernel_package() {
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            versioned_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(versioned_dependency("foo\n  Depends: libc6\n"), None);
    }

    #[test]
    fn names_the_deb_like_apt_does() {
        let record =
            "Package: busybox-static\nVersion: 1:1.35.0-4+b3\nArchitecture: amd64\nDepends: x\n";
        assert_eq!(
            deb_file_name(record).as_deref(),
            Some("busybox-static_1%3a1.35.0-4+b3_amd64.deb")
        );
        assert_eq!(deb_file_name("Package: x\n"), None);
    }
}
