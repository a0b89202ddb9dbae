//! banger's guest setup, written into a debootstrapped tree: agent, units, sshd, fstab.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use super::ImageError;
use crate::host::run::run;

/// Guest files, embedded from `scripts/guest/`.
const NET_SCRIPT: &str = include_str!("../../../scripts/guest/banger-net");
const NET_UNIT: &str = include_str!("../../../scripts/guest/banger-net.service");
const AGENT_UNIT: &str = include_str!("../../../scripts/guest/banger-agent.service");
const GROW_WORK_UNIT: &str = include_str!("../../../scripts/guest/banger-grow-work.service");
const GROW_ROOT_UNIT: &str = include_str!("../../../scripts/guest/banger-grow-root.service");
const SSHD_CONFIG: &str = include_str!("../../../scripts/guest/sshd-banger.conf");
const FSTAB: &str = include_str!("../../../scripts/guest/fstab");
const JOURNALD_CONFIG: &str = include_str!("../../../scripts/guest/journald-banger.conf");
const SYSTEM_CONFIG: &str = include_str!("../../../scripts/guest/system-banger.conf");
const SSH_UNIT_DROP_IN: &str = include_str!("../../../scripts/guest/ssh-banger.conf");
const MODPROBE_CONFIG: &str = include_str!("../../../scripts/guest/modprobe-banger.conf");

/// Debian units a microVM has no use for, masked (`systemctl mask`): each
/// costs seconds of a boot under an emulated CPU. A user can unmask any.
pub(crate) const MASKED_UNITS: &[&str] = &[
    // e2fsprogs' scrub of LVM snapshots (there are none) and its boot-time reaper.
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    // Gettys on virtual terminals: the console is the serial port ttyS0.
    "getty-static.service",
    // No EFI, no pstore, no GPU, no device-mapper in the guest.
    "systemd-pstore.service",
    "modprobe@efi_pstore.service",
    "modprobe@drm.service",
    "modprobe@dm_mod.service",
    // Loaded on first use anyway (a mount of configfs, an open of
    // /dev/fuse or /dev/loop-control), not at every boot.
    "modprobe@configfs.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    // Kernel debug and tracing filesystems, huge pages.
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "dev-hugepages.mount",
];

/// Generators that look for what a microVM never has (GPT partitions,
/// a hibernation image, boot counting, verity or integrity volumes), masked.
pub(crate) const MASKED_GENERATORS: &[&str] = &[
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-bless-boot-generator",
    "systemd-veritysetup-generator",
    "systemd-integritysetup-generator",
];

/// Links Debian's packages enable that the masks above do not cover:
/// getty@tty1 (a virtual terminal; the serial getty stays).
const DISABLED_LINKS: &[&str] = &["etc/systemd/system/getty.target.wants/getty@tty1.service"];

/// Where the agent lives in the guest.
pub(crate) const AGENT_PATH: &str = "usr/local/bin/banger-agent";

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
    run(Command::new("cp").arg("-a").arg(modules_dir).arg(&dest))?;
    Ok(())
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
        ("banger-grow-work.service", GROW_WORK_UNIT),
        ("banger-grow-root.service", GROW_ROOT_UNIT),
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
        "etc/systemd/system/ctrl-alt-del.target",
        "/lib/systemd/system/poweroff.target",
    )?;
    trim_boot(root)?;

    write_file(root, "etc/fstab", FSTAB.as_bytes(), 0o644)?;
    write_file(
        root,
        "etc/ssh/sshd_config.d/banger.conf",
        SSHD_CONFIG.as_bytes(),
        0o644,
    )?;
    remove_host_keys(root)?;
    clear_machine_id(root)?;
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

/// What keeps a boot short: masked units and generators, a volatile
/// journal, no status lines on the console, no CPU-feature modules loaded
/// by udev, sshd started without `sshd -t`.
fn trim_boot(root: &Path) -> Result<(), ImageError> {
    for unit in MASKED_UNITS {
        write_symlink(root, &format!("etc/systemd/system/{unit}"), "/dev/null")?;
    }
    for generator in MASKED_GENERATORS {
        write_symlink(
            root,
            &format!("etc/systemd/system-generators/{generator}"),
            "/dev/null",
        )?;
    }
    for link in DISABLED_LINKS {
        remove(&root.join(link))?;
    }
    write_file(
        root,
        "etc/systemd/journald.conf.d/banger.conf",
        JOURNALD_CONFIG.as_bytes(),
        0o644,
    )?;
    write_file(
        root,
        "etc/systemd/system.conf.d/banger.conf",
        SYSTEM_CONFIG.as_bytes(),
        0o644,
    )?;
    write_file(
        root,
        "etc/modprobe.d/banger.conf",
        MODPROBE_CONFIG.as_bytes(),
        0o644,
    )?;
    write_file(
        root,
        "etc/systemd/system/ssh.service.d/banger.conf",
        SSH_UNIT_DROP_IN.as_bytes(),
        0o644,
    )
}

/// Empties `/etc/machine-id` (systemd's postinst wrote one, which every VM
/// of the image would share): banger's initramfs gives each VM its own at
/// its first boot. D-Bus's copy becomes a link to it.
fn clear_machine_id(root: &Path) -> Result<(), ImageError> {
    write_file(root, "etc/machine-id", b"", 0o444)?;
    if root.join("var/lib/dbus").is_dir() {
        write_symlink(root, "var/lib/dbus/machine-id", "/etc/machine-id")?;
    }
    Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
