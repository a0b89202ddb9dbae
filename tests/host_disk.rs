//! Host-tier tests of `host::disk` against the real kernel and e2fsprogs (run as root).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use banger::host::disk::cow::{CowStrategy, clone_file};
use banger::host::disk::{DiskError, dm, ext4, loopdev};
use banger_testkit::{Need, eventually, loops_under, require};

const MIB: u64 = 1 << 20;

/// Detaches a loop device when dropped, so a failing test leaks nothing.
struct LoopGuard(PathBuf);

impl LoopGuard {
    fn attach(file: &Path, read_only: bool) -> LoopGuard {
        LoopGuard(loopdev::attach(file, read_only).expect("attach loop device"))
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if let Err(e) = loopdev::detach(&self.0) {
            eprintln!("cannot detach {}: {e}", self.0.display());
        }
    }
}

/// Removes a device-mapper snapshot (and its padded base) when dropped.
struct DmGuard(String);

impl Drop for DmGuard {
    fn drop(&mut self) {
        if let Err(e) = dm::remove(&self.0) {
            eprintln!("cannot remove dm device {}: {e}", self.0);
        }
    }
}

/// Unmounts a mount point when dropped.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A file of `len` bytes holding `marker` at each of `offsets`, holes elsewhere.
fn sparse_file(path: &Path, len: u64, offsets: &[u64], marker: &[u8]) {
    let file = File::create(path).expect("create");
    file.set_len(len).expect("set_len");
    for &off in offsets {
        file.write_all_at(marker, off).expect("write marker");
    }
}

fn read_all(path: &Path) -> Vec<u8> {
    fs::read(path).expect("read file")
}

fn allocated_bytes(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").blocks() * 512
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn loop_attach_find_and_detach() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("disk.img");
    sparse_file(&file, 8 * MIB, &[0], b"banger-loop");

    let dev = LoopGuard::attach(&file, false);
    let canonical = fs::canonicalize(&file).expect("canonicalize");
    assert_eq!(
        loopdev::find_by_backing(&file).expect("find"),
        std::slice::from_ref(&dev.0)
    );
    assert!(
        loopdev::list()
            .expect("list")
            .contains(&(dev.0.clone(), canonical.clone()))
    );

    let mut head = [0u8; 11];
    File::open(&dev.0)
        .expect("open device")
        .read_exact(&mut head)
        .expect("read device");
    assert_eq!(&head, b"banger-loop");
    let device = OpenOptions::new()
        .write(true)
        .open(&dev.0)
        .expect("open device rw");
    device.write_all_at(b"written", MIB).expect("write device");
    device.sync_all().expect("flush device");
    drop(device);
    assert_eq!(&read_all(&file)[MIB as usize..MIB as usize + 7], b"written");

    loopdev::detach(&dev.0).expect("detach");
    // Where udev probes new devices (a systemd host), the kernel clears the
    // device once udev closes it too: a moment later.
    assert!(
        eventually(std::time::Duration::from_secs(5), || {
            loopdev::find_by_backing(&file).expect("find").is_empty()
        }),
        "the loop device is still bound to {}",
        file.display()
    );
    loopdev::detach(&dev.0).expect("detaching twice is fine");
    loopdev::detach(Path::new("/dev/loop-never-there")).expect("a missing node is fine");
}

#[test]
fn read_only_loop_refuses_writes() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("base.img");
    sparse_file(&file, 4 * MIB, &[0], b"original");
    let before = read_all(&file);

    let dev = LoopGuard::attach(&file, true);
    let name = dev
        .0
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let ro = fs::read_to_string(format!("/sys/block/{name}/ro")).expect("ro flag");
    assert_eq!(ro.trim(), "1");
    let written = OpenOptions::new()
        .write(true)
        .open(&dev.0)
        .and_then(|mut d| d.write_all(b"clobber").and_then(|()| d.sync_all()));
    assert!(written.is_err(), "write to read-only {:?} succeeded", dev.0);
    assert_eq!(read_all(&file), before);
}

#[test]
fn concurrent_attaches_get_distinct_devices() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<PathBuf> = (0..4)
        .map(|i| {
            let f = dir.path().join(format!("d{i}.img"));
            sparse_file(&f, MIB, &[], b"");
            f
        })
        .collect();
    let guards: Vec<LoopGuard> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|f| s.spawn(move || LoopGuard::attach(f, true)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("attach thread"))
            .collect()
    });
    let mut devices: Vec<&PathBuf> = guards.iter().map(|g| &g.0).collect();
    devices.sort();
    devices.dedup();
    assert_eq!(devices.len(), files.len());
    for (file, guard) in files.iter().zip(&guards) {
        assert_eq!(
            loopdev::find_by_backing(file).expect("find"),
            std::slice::from_ref(&guard.0)
        );
    }
}

/// Checks what a caller of `clone_file` relies on, in directory `dir`.
fn assert_clone_behaves(dir: &Path, expected: CowStrategy) {
    let src = dir.join("rootfs.ext4");
    let dst = dir.join("clone.ext4");
    let offsets = [0, 5 * MIB, 63 * MIB];
    sparse_file(&src, 64 * MIB, &offsets, &[0xab; 4096]);
    let src_before = read_all(&src);
    let src_mtime = fs::metadata(&src).expect("stat").modified().expect("mtime");

    let strategy = clone_file(&src, &dst, 256 * MIB).expect("clone");
    assert_eq!(strategy, expected);

    assert_eq!(fs::metadata(&dst).expect("stat clone").len(), 256 * MIB);
    let cloned = read_all(&dst);
    assert_eq!(&cloned[..src_before.len()], &src_before[..]);
    assert!(cloned[src_before.len()..].iter().all(|&b| b == 0));
    assert!(
        allocated_bytes(&dst) < 4 * MIB,
        "clone is not sparse: {} bytes allocated",
        allocated_bytes(&dst)
    );
    assert_eq!(read_all(&src), src_before);
    assert_eq!(
        fs::metadata(&src).expect("stat").modified().expect("mtime"),
        src_mtime
    );
    assert_eq!(file_names(dir), ["clone.ext4", "rootfs.ext4"]);
}

#[test]
fn clone_file_on_ext4_is_a_sparse_copy() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let fs_type = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(dir.path())
        .output()
        .expect("stat -f");
    let fs_type = String::from_utf8_lossy(&fs_type.stdout).trim().to_string();
    require!(
        "ext4",
        Need::That(
            fs_type == "ext2/ext3",
            &format!("the temp dir is on {fs_type}, not ext4")
        )
    );
    assert_clone_behaves(dir.path(), CowStrategy::Copy);
}

#[test]
fn clone_file_refuses_to_shrink_and_leaves_nothing_behind() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.img");
    sparse_file(&src, 4 * MIB, &[0], b"data");
    let err = clone_file(&src, &dir.path().join("dst.img"), MIB).expect_err("shrink");
    assert!(matches!(err, DiskError::Shrink { .. }), "{err}");
    let err = clone_file(
        &dir.path().join("missing.img"),
        &dir.path().join("dst.img"),
        MIB,
    )
    .expect_err("missing source");
    assert!(err.to_string().contains("missing.img"), "{err}");
    assert_eq!(file_names(dir.path()), ["src.img"]);
}

#[test]
fn clone_file_on_xfs_is_a_reflink() {
    require!("xfs", Need::Root, Need::Program("mkfs.xfs"),);
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("xfs.img");
    sparse_file(&image, 512 * MIB, &[], b"");
    let mkfs = Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&image)
        .status()
        .expect("mkfs.xfs");
    assert!(mkfs.success());
    let dev = LoopGuard::attach(&image, false);
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");

    // The mount lives in a private mount namespace owned by this thread, so
    // nothing leaks into the host's mount table.
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare only changes this thread's namespaces; no
            // memory is passed.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            let private = Command::new("mount")
                .args(["--make-rprivate", "/"])
                .status()
                .expect("mount --make-rprivate");
            assert!(private.success());
            let mounted = Command::new("mount")
                .args(["-t", "xfs"])
                .arg(&dev.0)
                .arg(&mnt)
                .status()
                .expect("mount xfs");
            assert!(mounted.success());
            let _mount = MountGuard(mnt.clone());
            assert_clone_behaves(&mnt, CowStrategy::Reflink);
        })
        .join()
        .expect("xfs thread");
    });
}

#[test]
fn work_seed_clone_grow_and_authorize_key() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("work-seed.ext4");
    ext4::make_work_seed(&seed).expect("work seed");

    assert_eq!(ext4::stat_mode(&seed, "/").expect("root") & 0o7777, 0o700);
    assert_eq!(ext4::stat_mode(&seed, "/.ssh").expect(".ssh"), 0o040_700);
    assert_eq!(
        ext4::stat_mode(&seed, "/.ssh/authorized_keys").expect("keys"),
        0o100_600
    );
    assert!(
        ext4::read_file(&seed, "/.ssh/authorized_keys")
            .expect("keys")
            .is_empty()
    );
    let profile = ext4::read_file(&seed, "/.profile").expect(".profile");
    assert!(String::from_utf8_lossy(&profile).contains(".bashrc"));
    let label = Command::new("e2label")
        .arg(&seed)
        .output()
        .expect("e2label");
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "banger-work");

    let work = dir.path().join("work.ext4");
    clone_file(&seed, &work, fs::metadata(&seed).expect("seed").len()).expect("clone seed");
    ext4::grow(&work, 1 << 30).expect("grow");
    assert_eq!(fs::metadata(&work).expect("work").len(), 1 << 30);
    let dumpe2fs = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&work)
        .output()
        .expect("dumpe2fs");
    let header = String::from_utf8_lossy(&dumpe2fs.stdout);
    let block_count: u64 = header
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("block count");
    let block_size: u64 = header
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("block size");
    assert_eq!(block_count * block_size, 1 << 30);

    let key = b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBanger banger@host\n";
    ext4::write_file(&work, "/.ssh/authorized_keys", key, 0o600).expect("write key");
    assert_eq!(
        ext4::read_file(&work, "/.ssh/authorized_keys").expect("read key"),
        key
    );
    assert_eq!(ext4::stat_mode(&work, "/.ssh").expect(".ssh"), 0o040_700);
    assert_eq!(
        ext4::stat_mode(&work, "/.ssh/authorized_keys").expect("keys"),
        0o100_600
    );
    assert!(
        ext4::read_file(&seed, "/.ssh/authorized_keys")
            .expect("seed keys")
            .is_empty(),
        "the seed was written through its clone"
    );

    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&work)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck -fn: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

/// Every entry below `dir` in `image` as `path mode uid:gid size`, sorted,
/// walked with `debugfs ls -p` (lines `/inode/mode/uid/gid/name/size/`).
fn tree(image: &Path, dir: &str) -> Vec<String> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("ls -p {dir}"))
        .arg(image)
        .output()
        .expect("debugfs");
    let mut entries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let fields: Vec<&str> = line.split('/').collect();
        let [_, _inode, mode, uid, gid, name, size, ..] = fields[..] else {
            continue;
        };
        if matches!(name, "." | ".." | "lost+found") {
            continue;
        }
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        entries.push(
            format!("{path} {mode} {uid}:{gid} {size}")
                .trim_end()
                .to_string(),
        );
        if mode.starts_with("04") {
            entries.extend(tree(image, &path));
        }
    }
    entries.sort();
    entries
}

#[test]
fn work_seed_is_the_skeleton_of_root_whatever_the_umask() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = dir.path().join("work-seed.ext4");
    // This test binary's other tests do not depend on the umask.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let made = ext4::make_work_seed(&seed);
    nix::sys::stat::umask(old);
    made.expect("work seed");
    let bashrc = ext4::read_file(&seed, "/.bashrc").expect(".bashrc").len();
    let profile = ext4::read_file(&seed, "/.profile").expect(".profile").len();
    assert_eq!(
        tree(&seed, "/"),
        [
            format!("/.bashrc 100644 0:0 {bashrc}"),
            format!("/.profile 100644 0:0 {profile}"),
            "/.ssh 040700 0:0".to_string(),
            "/.ssh/authorized_keys 100600 0:0 0".to_string(),
        ]
    );
    assert_eq!(ext4::stat_mode(&seed, "/").expect("root"), 0o040_700);
    assert_eq!(file_names(dir.path()), ["work-seed.ext4"]);
}

#[test]
fn write_file_creates_parents_and_replaces_files() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("work.ext4");
    ext4::make_work_seed(&image).expect("work seed");

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ext4::write_file(&image, "/.config/banger/data.bin", &big, 0o640).expect("write");
    assert_eq!(
        ext4::read_file(&image, "/.config/banger/data.bin").expect("read"),
        big
    );
    assert_eq!(ext4::stat_mode(&image, "/.config").expect("dir"), 0o040_755);
    assert_eq!(
        ext4::stat_mode(&image, "/.config/banger/data.bin").expect("file"),
        0o100_640
    );

    ext4::write_file(&image, "/.config/banger/data.bin", b"short", 0o600).expect("replace");
    assert_eq!(
        ext4::read_file(&image, "/.config/banger/data.bin").expect("read"),
        b"short"
    );
    assert_eq!(
        ext4::stat_mode(&image, "/.config/banger/data.bin").expect("file"),
        0o100_600
    );

    ext4::write_file(&image, "/other/.ssh/id", b"k", 0o600).expect("nested .ssh");
    assert_eq!(
        ext4::stat_mode(&image, "/other/.ssh").expect("dir"),
        0o040_700
    );

    let err = ext4::write_file(&image, "/.ssh", b"x", 0o600).expect_err("directory");
    assert!(matches!(err, DiskError::WrongType { .. }), "{err}");
    let err = ext4::write_file(&image, "/.profile/x", b"x", 0o600).expect_err("file as dir");
    assert!(matches!(err, DiskError::WrongType { .. }), "{err}");
    let err = ext4::read_file(&image, "/nope").expect_err("missing");
    assert!(matches!(err, DiskError::NotFound { .. }), "{err}");
    let err = ext4::write_file(&image, "/a b", b"x", 0o600).expect_err("space");
    assert!(matches!(err, DiskError::GuestPath { .. }), "{err}");
    let err = ext4::stat_mode(&dir.path().join("absent.ext4"), "/").expect_err("no image");
    assert!(err.to_string().contains("absent.ext4"), "{err}");

    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .status()
        .expect("e2fsck");
    assert!(fsck.success());
    assert_eq!(file_names(dir.path()), ["work.ext4"]);
}

#[test]
fn scrub_for_image_removes_what_is_one_machine_s_and_keeps_the_rest() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    for d in [
        "etc/ssh/banger",
        "var/log/journal/0123",
        "var/log/apt",
        "var/lib/dbus",
        "root",
    ] {
        fs::create_dir_all(tree.join(d)).expect("mkdir");
    }
    for (file, text) in [
        ("etc/ssh/ssh_host_ed25519_key", "private"),
        ("etc/ssh/ssh_host_ed25519_key.pub", "public"),
        ("etc/ssh/sshd_config", "config"),
        ("etc/ssh/banger/authorized_keys", "banger's key"),
        ("etc/machine-id", "0123456789abcdef0123456789abcdef\n"),
        ("var/log/journal/0123/system.journal", "journal"),
        ("var/log/apt/history.log", "history"),
        ("var/log/syslog", "syslog"),
        ("root/.keep", "kept"),
    ] {
        fs::write(tree.join(file), text).expect("write");
    }
    std::os::unix::fs::symlink("/etc/machine-id", tree.join("var/lib/dbus/machine-id"))
        .expect("symlink");
    let image = dir.path().join("rootfs.ext4");
    ext4::mkfs_from_dir(&tree, &image, 32 * MIB, "rootfs").expect("mkfs");

    ext4::scrub_for_image(&image).expect("scrub");
    let exists = |path: &str| ext4::stat_mode(&image, path).is_ok();
    for gone in [
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
        "/etc/ssh/banger/authorized_keys",
        "/var/log/journal/0123",
        "/var/log/apt/history.log",
        "/var/log/syslog",
    ] {
        assert!(!exists(gone), "{gone} is still there");
    }
    for kept in [
        "/etc/ssh/sshd_config",
        "/var/log/journal",
        "/var/log/apt",
        "/root/.keep",
    ] {
        assert!(exists(kept), "{kept} is gone");
    }
    assert_eq!(
        ext4::read_file(&image, "/etc/machine-id").expect("read"),
        b""
    );
    assert_eq!(
        ext4::stat_mode(&image, "/etc/machine-id").expect("stat"),
        0o100_444
    );
    // A symlink to /etc/machine-id is the machine id itself: it stays.
    assert_eq!(
        ext4::stat_mode(&image, "/var/lib/dbus/machine-id").expect("stat") & 0o170_000,
        0o120_000
    );
    ext4::scrub_for_image(&image).expect("scrubbing twice changes nothing");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .status()
        .expect("e2fsck");
    assert!(fsck.success());
}

#[test]
fn a_shrunk_work_seed_keeps_its_files_and_other_keys() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("work.ext4");
    ext4::make_work_seed(&image).expect("work seed");
    ext4::grow(&image, 256 * MIB).expect("grow");
    let banger = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBangerBangerBangerBangerBangerBanger banger";
    let mine = "restrict ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMineMineMineMineMineMineMineMine me";
    let keys = format!("{banger}\n{mine}\n");
    ext4::write_file(&image, "/.ssh/authorized_keys", keys.as_bytes(), 0o644).expect("keys");
    ext4::write_file(&image, "/notes", b"notes\n", 0o644).expect("notes");

    ext4::remove_authorized_key(&image, "/.ssh/authorized_keys", banger).expect("remove");
    assert_eq!(
        ext4::read_file(&image, "/.ssh/authorized_keys").expect("read"),
        format!("{mine}\n").as_bytes()
    );
    assert_eq!(
        ext4::stat_mode(&image, "/.ssh/authorized_keys").expect("stat"),
        0o100_600
    );
    ext4::remove_authorized_key(&image, "/absent", banger).expect("nothing to remove");

    let size = ext4::shrink_to_fit(&image).expect("shrink");
    assert_eq!(fs::metadata(&image).expect("image").len(), size);
    assert!(size < 64 * MIB, "{size} bytes");
    assert_eq!(ext4::read_file(&image, "/notes").expect("read"), b"notes\n");
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .status()
        .expect("e2fsck");
    assert!(fsck.success());
}

#[test]
fn an_upper_disk_without_a_layer_is_refused_by_name() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("etc")).expect("mkdir");
    let (lower, upper) = (dir.path().join("lower.ext4"), dir.path().join("upper.ext4"));
    ext4::mkfs_from_dir(&tree, &lower, 32 * MIB, "rootfs").expect("mkfs");
    ext4::mkfs_from_dir(&tree, &upper, 32 * MIB, "upper").expect("mkfs");
    let out = dir.path().join("merged.ext4");
    let err = banger::host::disk::overlay::merge_to_ext4(&lower, &upper, &out, 64 * MIB, "rootfs")
        .expect_err("no layer");
    assert!(err.to_string().contains("holds no overlay layer"), "{err}");
    assert!(!out.exists());
    assert_eq!(file_names(dir.path()), ["lower.ext4", "tree", "upper.ext4"]);
    assert!(loops_under(dir.path()).is_empty());
}

#[test]
fn mkfs_from_dir_copies_the_tree_and_grow_refuses_to_shrink() {
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("etc")).expect("mkdir");
    fs::write(tree.join("etc/hostname"), b"scratch\n").expect("write");
    let image = dir.path().join("rootfs.ext4");
    ext4::mkfs_from_dir(&tree, &image, 32 * MIB, "rootfs").expect("mkfs");
    assert_eq!(fs::metadata(&image).expect("image").len(), 32 * MIB);
    assert_eq!(
        ext4::read_file(&image, "/etc/hostname").expect("read"),
        b"scratch\n"
    );
    let err = ext4::grow(&image, 16 * MIB).expect_err("shrink");
    assert!(matches!(err, DiskError::Shrink { .. }), "{err}");
    ext4::grow(&image, 32 * MIB).expect("same size is a no-op");
    assert_eq!(fs::metadata(&image).expect("image").len(), 32 * MIB);
}

#[test]
fn dm_snapshot_pads_and_keeps_base_untouched() {
    require!(
        "dm-snapshot",
        Need::Root,
        Need::That(
            dm::available(),
            "no device-mapper (/dev/mapper/control absent or dmsetup fails)"
        ),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let base_file = dir.path().join("rootfs.ext4");
    sparse_file(&base_file, 16 * MIB, &[0], b"base-image");
    let base_before = read_all(&base_file);
    let base = LoopGuard::attach(&base_file, true);
    let name = format!("banger-test-{}", std::process::id());

    for total in [16 * MIB, 32 * MIB] {
        let cow_file = dir.path().join(format!("cow-{total}"));
        sparse_file(&cow_file, 32 * MIB, &[], b"");
        let cow = LoopGuard::attach(&cow_file, false);
        let guard = DmGuard(name.clone());
        let dev = dm::create_snapshot(&name, &base.0, &cow.0, total).expect("create snapshot");
        assert_eq!(dev, dm::device_path(&name));
        let padded = total > 16 * MIB;
        let mut expected = vec![name.clone()];
        if padded {
            expected.push(dm::base_name(&name));
        }
        assert_eq!(dm::list(&name).expect("list"), expected);

        let mut snapshot = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .expect("open snapshot");
        let size = std::io::Seek::seek(&mut snapshot, std::io::SeekFrom::End(0)).expect("size");
        assert_eq!(size, total);
        let mut head = [0u8; 10];
        snapshot.read_exact_at(&mut head, 0).expect("read");
        assert_eq!(&head, b"base-image");
        snapshot.write_all_at(b"guest", 0).expect("write head");
        if padded {
            snapshot
                .write_all_at(b"grown", 20 * MIB)
                .expect("write past base");
        }
        snapshot.sync_all().expect("flush");
        drop(snapshot);
        assert_eq!(read_all(&base_file), base_before);

        drop(guard);
        assert!(dm::list(&name).expect("list").is_empty());
        dm::remove(&name).expect("removing twice is fine");
    }
    let err = dm::create_snapshot(&name, &base.0, &base.0, MIB).expect_err("shrink");
    assert!(matches!(err, DiskError::Shrink { .. }), "{err}");
    assert!(dm::list(&name).expect("list").is_empty());
}
