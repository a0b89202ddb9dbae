//! Fetching Debian packages with apt into banger's cache and unpacking them,
//! never installing. apt runs against a private index of the image's own
//! suite on its Debian mirror (not the host's sources), so the kernel
//! matches the rootfs and a host of another release or distribution (e.g.
//! Ubuntu, with `debian-archive-keyring`) builds the same image.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::ImageError;
use super::scratch::ScratchDir;
use crate::host::run::run;
use crate::state::atomic;

/// The metapackage whose dependency names the current cloud kernel.
pub(crate) const KERNEL_METAPACKAGE: &str = "linux-image-cloud-amd64";

/// Debian's archive key, which signs the suites banger builds from.
pub(crate) const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// How long a fetched package index is used before it is fetched again.
const INDEX_FRESH_FOR: Duration = Duration::from_secs(24 * 3600);

/// A private apt state for one suite of one mirror, under banger's cache.
pub(crate) struct Apt {
    dir: PathBuf,
}

impl Apt {
    /// The index of `suite`'s main component on `mirror`, fetched unless a
    /// fresh one is cached.
    pub(crate) fn for_suite(
        cache_dir: &Path,
        mirror: &str,
        suite: &str,
    ) -> Result<Self, ImageError> {
        let key = mirror
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let apt = Self {
            dir: cache_dir.join("apt").join(format!("{suite}-{key}")),
        };
        let lists = apt.dir.join("state/lists");
        for dir in [
            lists.join("partial"),
            apt.dir.join("cache/archives/partial"),
            apt.dir.join("parts"),
        ] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create directory", &dir))?;
        }
        let sources = apt.dir.join("sources.list");
        atomic::write(&sources, sources_list(mirror, suite).as_bytes(), 0o644)?;
        let fresh = fs::metadata(apt.dir.join("updated"))
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age < INDEX_FRESH_FOR)
            });
        if !fresh {
            if !Path::new(DEBIAN_KEYRING).is_file() {
                return Err(ImageError::InvalidOptions(format!(
                    "{DEBIAN_KEYRING} is missing; install the debian-archive-keyring package"
                )));
            }
            run(apt.command("apt-get").args(["update", "-q"]))?;
            atomic::write(&apt.dir.join("updated"), b"", 0o644)?;
        }
        Ok(apt)
    }

    /// `program` (apt-get or apt-cache) pointed at this private state only.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let dir = |sub: &str| self.dir.join(sub).display().to_string();
        for (key, value) in [
            ("Dir::Etc::SourceList", dir("sources.list")),
            ("Dir::Etc::SourceParts", dir("parts")),
            ("Dir::Etc::PreferencesParts", dir("parts")),
            ("Dir::State", dir("state")),
            ("Dir::Cache", dir("cache")),
            ("APT::Sandbox::User", "root".to_owned()),
            // Package lists only: no translations, AppStream data or icons.
            ("Acquire::Languages", "none".to_owned()),
            (
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled",
                "false".to_owned(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled",
                "false".to_owned(),
            ),
            (
                "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled",
                "false".to_owned(),
            ),
        ] {
            cmd.arg("-o").arg(format!("{key}={value}"));
        }
        cmd
    }
}

/// The sources of `suite`: its main component, and for a release with
/// them, its updates and (from Debian's own mirror) its security updates,
/// which carry the newest kernel.
fn sources_list(mirror: &str, suite: &str) -> String {
    let line =
        |uri: &str, suite: &str| format!("deb [signed-by={DEBIAN_KEYRING}] {uri} {suite} main\n");
    let mut text = line(mirror, suite);
    if !matches!(suite, "sid" | "unstable" | "experimental") {
        text += &line(mirror, &format!("{suite}-updates"));
        if let Some(base) = mirror.strip_suffix("deb.debian.org/debian") {
            text += &line(
                &format!("{base}deb.debian.org/debian-security"),
                &format!("{suite}-security"),
            );
        }
    }
    text
}

/// The versioned kernel package `linux-image-cloud-amd64` depends on,
/// e.g. `linux-image-6.1.0-56-cloud-amd64`.
pub(crate) fn resolve_kernel_package(apt: &Apt) -> Result<String, ImageError> {
    let out = run(apt
        .command("apt-cache")
        .args(["depends", KERNEL_METAPACKAGE]))?;
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
fn candidate_file_name(apt: &Apt, package: &str) -> Result<String, ImageError> {
    let out = run(apt
        .command("apt-cache")
        .args(["show", "--no-all-versions", package]))
    .map_err(|_| ImageError::PackageNotFound {
        package: package.to_string(),
    })?;
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
pub(crate) fn fetch_deb(
    apt: &Apt,
    package: &str,
    cache_dir: &Path,
) -> Result<(PathBuf, bool), ImageError> {
    let debs = cache_dir.join("debs");
    let file_name = candidate_file_name(apt, package)?;
    let cached = debs.join(&file_name);
    if cached.is_file() {
        return Ok((cached, true));
    }
    fs::create_dir_all(&debs).map_err(ImageError::io("create directory", &debs))?;
    // Download beside the cache and rename, so an interrupted download leaves nothing behind.
    let partial = ScratchDir::new(&cache_dir.join("tmp"), "download")?;
    run(apt
        .command("apt-get")
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
    fn a_release_gets_its_updates_and_security_sources() {
        let text = sources_list("http://deb.debian.org/debian", "bookworm");
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with("http://deb.debian.org/debian bookworm main"));
        assert!(lines[1].ends_with("http://deb.debian.org/debian bookworm-updates main"));
        assert!(lines[2].ends_with("http://deb.debian.org/debian-security bookworm-security main"));
        assert!(lines.iter().all(|l| l.contains(DEBIAN_KEYRING)));
        // A local mirror: its own updates, no guessed security mirror.
        assert_eq!(
            sources_list("http://mirror.local/debian", "trixie")
                .lines()
                .count(),
            2
        );
        assert_eq!(
            sources_list("http://deb.debian.org/debian", "sid")
                .lines()
                .count(),
            1
        );
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
