//! The root filesystem: debootstrap (cached as a tarball), banger's guest setup, `mkfs.ext4 -d`.

use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::manifest::hex;
use super::scratch::{ScratchDir, run};
use super::{ImageError, Progress};

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

const NET_SCRIPT: &str = include_str!("../../../scripts/guest/banger-net");
const NET_UNIT: &str = include_str!("../../../scripts/guest/banger-net.service");
const AGENT_UNIT: &str = include_str!("../../../scripts/guest/banger-agent.service");
const SSH_KEYGEN_UNIT: &str = include_str!("../../../scripts/guest/banger-ssh-keygen.service");
const GROW_WORK_UNIT: &str = include_str!("../../../scripts/guest/banger-grow-work.service");
const SSHD_CONFIG: &str = include_str!("../../../scripts/guest/sshd-banger.conf");
const FSTAB: &str = include_str!("../../../scripts/guest/fstab");

/// Where the agent lives in the guest.
pub(crate) const AGENT_PATH: &str = "usr/local/bin/banger-agent";

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
        return run(tar().arg("-xpf").arg(&cache.tree).arg("-C").arg(target)).map(drop);
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
        fs::rename(&partial, &cache.packages).map_err(ImageError::io("move tarball", &partial))?;
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
    fs::rename(&partial, &cache.tree).map_err(ImageError::io("move tarball", &partial))
}

/// Removes whatever is at `path` (file or symlink); absent is fine.
fn remove(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(ImageError::io("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Writes `contents` to `root/rel` with `mode`, replacing a file or symlink
/// there (never writing through a symlink that may point out of the tree).
fn write_file(root: &Path, rel: &str, contents: &[u8], mode: u32) -> Result<(), ImageError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(ImageError::io("create directory", parent))?;
    }
    remove(&path)?;
    fs::write(&path, contents).map_err(ImageError::io("write", &path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(ImageError::io("chmod", &path))
}

/// Makes `root/rel` a symlink to `target`, replacing what was there.
fn write_symlink(root: &Path, rel: &str, target: &str) -> Result<(), ImageError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(ImageError::io("create directory", parent))?;
    }
    remove(&path)?;
    symlink(target, &path).map_err(ImageError::io("symlink", &path))
}

/// Empties the directory `root/rel` except for the names in `keep`.
fn clear_dir(root: &Path, rel: &str, keep: &[&str]) -> Result<(), ImageError> {
    let dir = root.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io("read directory", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ImageError::io("read directory", &dir))?;
        if keep.iter().any(|k| entry.file_name() == *k) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(ImageError::io("remove", &path))?;
    }
    Ok(())
}

/// Copies the kernel's module tree into the rootfs so `modprobe` works in the guest.
pub(crate) fn install_modules(
    root: &Path,
    modules_dir: &Path,
    release: &str,
) -> Result<(), ImageError> {
    // Merged-/usr trees have /lib -> usr/lib; write to the real directory.
    let lib = match fs::symlink_metadata(root.join("lib")) {
        Ok(meta) if meta.file_type().is_symlink() => "usr/lib",
        _ => "lib",
    };
    let dest = root.join(lib).join("modules").join(release);
    let parent = root.join(lib).join("modules");
    fs::create_dir_all(&parent).map_err(ImageError::io("create directory", &parent))?;
    let _ = fs::remove_dir_all(&dest);
    run(Command::new("cp").arg("-a").arg(modules_dir).arg(&dest)).map(drop)
}

/// Installs the agent and banger's guest configuration into the debootstrap tree `root`.
pub(crate) fn configure_guest(root: &Path, agent_binary: &Path) -> Result<(), ImageError> {
    let agent =
        fs::read(agent_binary).map_err(ImageError::io("read agent binary", agent_binary))?;
    write_file(root, AGENT_PATH, &agent, 0o755)?;

    write_file(
        root,
        "usr/local/lib/banger/banger-net",
        NET_SCRIPT.as_bytes(),
        0o755,
    )?;
    let units = [
        ("banger-net.service", NET_UNIT),
        ("banger-agent.service", AGENT_UNIT),
        ("banger-ssh-keygen.service", SSH_KEYGEN_UNIT),
        ("banger-grow-work.service", GROW_WORK_UNIT),
    ];
    for (name, text) in units {
        write_file(
            root,
            &format!("etc/systemd/system/{name}"),
            text.as_bytes(),
            0o644,
        )?;
        write_symlink(
            root,
            &format!("etc/systemd/system/multi-user.target.wants/{name}"),
            &format!("/etc/systemd/system/{name}"),
        )?;
    }
    write_symlink(
        root,
        "etc/systemd/system/ssh.service.wants/banger-ssh-keygen.service",
        "/etc/systemd/system/banger-ssh-keygen.service",
    )?;
    write_symlink(
        root,
        "etc/systemd/system/ctrl-alt-del.target",
        "/lib/systemd/system/poweroff.target",
    )?;

    write_file(root, "etc/fstab", FSTAB.as_bytes(), 0o644)?;
    write_file(
        root,
        "etc/ssh/sshd_config.d/banger.conf",
        SSHD_CONFIG.as_bytes(),
        0o644,
    )?;
    remove_host_keys(root)?;
    lock_root_password(root)?;
    // The host's resolver and name must not leak in; banger-net writes both at boot.
    write_file(root, "etc/resolv.conf", b"", 0o644)?;
    write_file(root, "etc/hostname", b"banger\n", 0o644)?;

    clear_dir(root, "var/cache/apt/archives", &["partial", "lock"])?;
    clear_dir(root, "var/cache/apt", &["archives"])?;
    clear_dir(root, "var/lib/apt/lists", &["partial", "lock"])?;
    clear_dir(root, "var/log/apt", &[])?;
    remove(&root.join("var/log/bootstrap.log"))
}

/// Removes the host keys the openssh-server package generated in the tree.
fn remove_host_keys(root: &Path) -> Result<(), ImageError> {
    let dir = root.join("etc/ssh");
    let entries = fs::read_dir(&dir).map_err(ImageError::io("read directory", &dir))?;
    for entry in entries {
        let entry = entry.map_err(ImageError::io("read directory", &dir))?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

/// Sets root's password field to `*`: no password can log in.
fn lock_root_password(root: &Path) -> Result<(), ImageError> {
    let path = root.join("etc/shadow");
    let shadow = fs::read_to_string(&path).map_err(ImageError::io("read", &path))?;
    let locked: String = shadow
        .lines()
        .map(|line| match line.strip_prefix("root:") {
            Some(rest) => {
                let after = rest.split_once(':').map_or("", |(_, after)| after);
                format!("root:*:{after}\n")
            }
            None => format!("{line}\n"),
        })
        .collect();
    write_file(root, "etc/shadow", locked.as_bytes(), 0o640)
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

/// Writes an ext4 image of `size` bytes at `out` holding the tree `dir`, without mounting.
pub(crate) fn mkfs_ext4(dir: &Path, out: &Path, size: u64, label: &str) -> Result<(), ImageError> {
    let file = File::create(out).map_err(ImageError::io("create", out))?;
    file.set_len(size).map_err(ImageError::io("size", out))?;
    drop(file);
    run(Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-T",
            "default",
            "-E",
            "root_owner=0:0",
            "-L",
            label,
            "-d",
        ])
        .arg(dir)
        .arg(out))
    .map(drop)
}

/// Sets the mode of the root directory of the ext4 image `fs_image` (mkfs.ext4 -d keeps it 0755).
pub(crate) fn set_root_mode(fs_image: &Path, mode: u32) -> Result<(), ImageError> {
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-R")
        .arg(format!(
            "set_inode_field / mode 0{:o}",
            0o040_000 | (mode & 0o7777)
        ))
        .arg(fs_image))
    .map(drop)
}

/// The work seed's tree in `dir`: root's dot files from the rootfs tree and an empty `.ssh`.
pub(crate) fn work_seed_tree(rootfs: &Path, dir: &Path) -> Result<(), ImageError> {
    fs::create_dir_all(dir).map_err(ImageError::io("create directory", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(ImageError::io("chmod", dir))?;
    for name in [".bashrc", ".profile"] {
        let from = [
            rootfs.join("root").join(name),
            rootfs.join("etc/skel").join(name),
        ]
        .into_iter()
        .find(|p| p.is_file());
        if let Some(from) = from {
            let bytes = fs::read(&from).map_err(ImageError::io("read", &from))?;
            write_file(dir, name, &bytes, 0o644)?;
        }
    }
    let ssh = dir.join(".ssh");
    fs::create_dir_all(&ssh).map_err(ImageError::io("create directory", &ssh))?;
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))
        .map_err(ImageError::io("chmod", &ssh))?;
    write_file(dir, ".ssh/authorized_keys", b"", 0o600)
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

    #[test]
    fn root_password_is_locked_and_other_lines_kept() {
        let dir = std::env::temp_dir().join(format!("banger-shadow-{}", std::process::id()));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/shadow"),
            "root:$6$abc:19000:0:99999:7:::\ndaemon:*:19000::::::\n",
        )
        .unwrap();
        lock_root_password(&dir).unwrap();
        let shadow = fs::read_to_string(dir.join("etc/shadow")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(shadow, "root:*:19000:0:99999:7:::\ndaemon:*:19000::::::\n");
    }

    #[test]
    fn write_file_replaces_a_symlink_instead_of_following_it() {
        let dir = std::env::temp_dir().join(format!("banger-symlink-{}", std::process::id()));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("outside"), "host").unwrap();
        symlink(dir.join("outside"), dir.join("etc/resolv.conf")).unwrap();
        write_file(&dir, "etc/resolv.conf", b"guest", 0o644).unwrap();
        let outside = fs::read_to_string(dir.join("outside")).unwrap();
        let inside = fs::read_to_string(dir.join("etc/resolv.conf")).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!((outside.as_str(), inside.as_str()), ("host", "guest"));
    }
}
