//! The root filesystem: debootstrap (cached), sizing, and `mkfs.ext4 -d` without mounting.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::manifest::hex;
use super::scratch::ScratchDir;
use super::{ImageError, Progress};
use crate::host::run::run;
use crate::state::atomic;

/// Packages every image has, before the user's `--packages`.
pub(crate) const BASE_PACKAGES: &[&str] = &[
    "systemd-sysv",
    "openssh-server",
    "iproute2",
    "ca-certificates",
    // Device units for /dev/vdb and eth0, and modprobe for the installed modules.
    "udev",
    "kmod",
];

const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The `--include` list: the base packages, then the user's, without repeats.
pub(crate) fn include_list(extra: &[String]) -> Vec<String> {
    let mut list: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
    for p in extra {
        if !list.contains(p) {
            list.push(p.clone());
        }
    }
    list
}

/// The Debian mirror the host's apt uses for `suite`, else deb.debian.org.
pub(crate) fn host_mirror(suite: &str) -> String {
    let mut texts = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(text);
    }
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let ext = path.extension().and_then(|e| e.to_str());
            if matches!(ext, Some("list" | "sources"))
                && let Ok(text) = fs::read_to_string(&path)
            {
                texts.push(text);
            }
        }
    }
    texts
        .iter()
        .find_map(|text| mirror_in_sources(text, suite))
        .unwrap_or_else(|| DEFAULT_MIRROR.to_string())
}

/// The URI of the first `deb` source for exactly `suite`, in one-line
/// (`deb [opts] URI SUITE COMPONENTS`) or deb822 (`URIs:`/`Suites:`) form.
fn mirror_in_sources(text: &str, suite: &str) -> Option<String> {
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("deb ") else {
            continue;
        };
        // Options may span words: "[arch=amd64 signed-by=x]".
        let rest = match rest.trim_start().strip_prefix('[') {
            Some(options) => options.split_once(']').map_or("", |(_, after)| after),
            None => rest,
        };
        let mut words = rest.split_whitespace();
        if let (Some(uri), Some(s)) = (words.next(), words.next())
            && s == suite
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
        };
        let types = field("Types").unwrap_or_default();
        let enabled = field("Enabled").is_none_or(|v| v != "no");
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
            continue;
        };
        if suites.split_whitespace().any(|s| s == suite)
            && let Some(uri) = uris.split_whitespace().next()
        {
            return Some(uri.trim_end_matches('/').to_string());
        }
    }
    None
}

/// Cache files for one set of debootstrap inputs: the downloaded packages
/// (`--make-tarball`) and the installed base tree.
struct BaseCache {
    packages: PathBuf,
    tree: PathBuf,
}

impl BaseCache {
    fn new(cache_dir: &Path, suite: &str, include: &[String], mirror: &str) -> Self {
        let mut sorted = include.to_vec();
        sorted.sort();
        let digest = Sha256::digest(format!("{suite}\n{mirror}\n{}", sorted.join(",")));
        let stem = format!("{suite}-{}", hex(&digest[..8]));
        let dir = cache_dir.join("debootstrap");
        Self {
            packages: dir.join(format!("{stem}.tgz")),
            tree: dir.join(format!("{stem}.tree.tar")),
        }
    }
}

/// `tar` keeping numeric owners, modes and every extended attribute (file capabilities).
fn tar() -> Command {
    let mut cmd = Command::new("tar");
    cmd.args([
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--acls",
    ]);
    cmd
}

/// Fills `target` (which must not exist) with the debootstrapped base system.
///
/// The packages are downloaded once into a `--make-tarball` tarball, and the
/// installed tree is kept as a tar file, so a rebuild with the same inputs
/// only unpacks it.
pub(crate) fn debootstrap(
    suite: &str,
    include: &[String],
    cache_dir: &Path,
    target: &Path,
    progress: &dyn Progress,
) -> Result<(), ImageError> {
    let mirror = host_mirror(suite);
    let cache = BaseCache::new(cache_dir, suite, include, &mirror);
    let dir = cache_dir.join("debootstrap");
    fs::create_dir_all(&dir).map_err(ImageError::io("create directory", &dir))?;
    let common = |cmd: &mut Command| {
        cmd.arg("--variant=minbase")
            .arg(format!("--include={}", include.join(",")))
            .arg(suite);
    };

    progress.stage("debootstrap");
    if cache.tree.is_file() {
        progress.detail(&format!(
            "using cached base system {}",
            cache.tree.display()
        ));
        progress.stage("packages");
        fs::create_dir_all(target).map_err(ImageError::io("create directory", target))?;
        run(tar().arg("-xpf").arg(&cache.tree).arg("-C").arg(target))?;
        return Ok(());
    }
    if cache.packages.is_file() {
        progress.detail(&format!(
            "using cached packages {}",
            cache.packages.display()
        ));
    } else {
        progress.detail(&format!("downloading {suite} packages from {mirror}"));
        let work = ScratchDir::new(&cache_dir.join("tmp"), "debootstrap")?;
        let partial = work.path().join("packages.tgz");
        let mut cmd = Command::new("debootstrap");
        cmd.arg(format!("--make-tarball={}", partial.display()));
        common(&mut cmd);
        run(cmd.arg(work.path().join("target")).arg(&mirror))?;
        atomic::persist(&partial, &cache.packages)?;
    }

    progress.stage("packages");
    progress.detail(&format!("installing {}", include.join(", ")));
    // A private mount namespace: the /proc and /sys debootstrap mounts in the
    // target vanish with it, whatever way it exits.
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "debootstrap"])
        .arg(format!("--unpack-tarball={}", cache.packages.display()));
    common(&mut cmd);
    run(cmd.arg(target).arg(&mirror))?;

    progress.detail(&format!(
        "caching the base system in {}",
        cache.tree.display()
    ));
    let work = ScratchDir::new(&cache_dir.join("tmp"), "tree")?;
    let partial = work.path().join("tree.tar");
    run(tar()
        .arg("-cf")
        .arg(&partial)
        .arg("-C")
        .arg(target)
        .arg("."))?;
    Ok(atomic::persist(&partial, &cache.tree)?)
}

/// Bytes the tree at `dir` occupies on disk.
pub(crate) fn tree_usage(dir: &Path) -> Result<u64, ImageError> {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).map_err(ImageError::io("stat", &path))?;
        total += meta.blocks() * 512 + 256;
        if meta.is_dir() {
            for entry in fs::read_dir(&path).map_err(ImageError::io("read directory", &path))? {
                stack.push(
                    entry
                        .map_err(ImageError::io("read directory", &path))?
                        .path(),
                );
            }
        }
    }
    Ok(total)
}

/// The rootfs size for `content` bytes: 1.3 times it plus 256 MiB, in whole MiB.
pub(crate) fn default_size(content: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    (content + content * 3 / 10 + 256 * MIB).div_ceil(MIB) * MIB
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_mirror_in_deb822_sources() {
        let text = "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n\n\
                    Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            mirror_in_sources(text, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_in_sources(text, "bookworm-security").as_deref(),
            Some("http://security.example/debian-security")
        );
        assert_eq!(mirror_in_sources(text, "trixie"), None);
    }

    #[test]
    fn finds_the_mirror_in_one_line_sources() {
        let text = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_in_sources(text, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        let plain = "deb http://plain.example/debian trixie main\n";
        assert_eq!(
            mirror_in_sources(plain, "trixie").as_deref(),
            Some("http://plain.example/debian")
        );
    }

    #[test]
    fn disabled_deb822_stanzas_are_ignored() {
        let text = "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n";
        assert_eq!(mirror_in_sources(text, "bookworm"), None);
    }

    #[test]
    fn include_list_keeps_the_base_and_drops_repeats() {
        let list = include_list(&["vim".to_string(), "iproute2".to_string()]);
        assert_eq!(
            list[..BASE_PACKAGES.len()],
            BASE_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(list.last().map(String::as_str), Some("vim"));
        assert_eq!(list.len(), BASE_PACKAGES.len() + 1);
    }

    #[test]
    fn cache_key_ignores_package_order() {
        let key = |pkgs: &[&str]| {
            let pkgs: Vec<String> = pkgs.iter().map(|p| p.to_string()).collect();
            BaseCache::new(Path::new("/c"), "bookworm", &pkgs, "http://m")
        };
        let (a, b, c) = (key(&["a", "b"]), key(&["b", "a"]), key(&["a"]));
        assert_eq!((&a.packages, &a.tree), (&b.packages, &b.tree));
        assert_ne!(a.packages, c.packages);
        assert!(a.packages.starts_with("/c/debootstrap"));
        assert!(a.tree.to_string_lossy().ends_with(".tree.tar"));
    }

    #[test]
    fn default_size_adds_headroom_in_whole_mib() {
        assert_eq!(default_size(0), 256 << 20);
        assert_eq!(default_size(1000 << 20), 1556 << 20);
        assert_eq!(default_size(1) % (1 << 20), 0);
    }
}
