//! `banger image commit` through the CLI on the fake VMM: a stopped VM's
//! root disk (copy strategy, and an overlay of a seeded image) and work disk
//! become a new image whose VMs see what the VM saw, its own files
//! untouched; what it refuses; and a commit killed midway, which registers
//! nothing and leaves `gc` a staging directory to sweep.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use banger_testkit::context::{entries, faulty_vmm_context};
use banger_testkit::{TestContext, create_small};

/// Runs a debugfs script on `image` (`-w`: writable), returns stdout.
fn debugfs(image: &Path, script: &str, write: bool) -> String {
    let mut cmd = Command::new("debugfs");
    if write {
        cmd.arg("-w");
    }
    let out = cmd
        .arg("-R")
        .arg(script)
        .arg(image)
        .output()
        .expect("debugfs");
    assert!(out.status.success(), "{script}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a debugfs script of several commands on `image`, writable.
fn debugfs_script(image: &Path, script: &str) {
    let mut child = Command::new("debugfs")
        .args(["-w", "-f", "-"])
        .arg(image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("debugfs");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "{script}");
}

fn cat(image: &Path, path: &str) -> String {
    debugfs(image, &format!("cat {path}"), false)
}

/// The names in directory `dir` of `image`.
fn names(image: &Path, dir: &str) -> Vec<String> {
    debugfs(image, &format!("ls -p {dir}"), false)
        .lines()
        .filter_map(|l| l.strip_prefix('/')?.split('/').nth(4).map(str::to_owned))
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// `mode` of `path` in `image`, as debugfs's `stat` prints it (e.g. `0444`).
fn mode(image: &Path, path: &str) -> String {
    let stat = debugfs(image, &format!("stat {path}"), false);
    let at = stat.find("Mode:").expect("a mode");
    stat[at + 5..].split_whitespace().next().unwrap().to_owned()
}

fn vm_dir(ctx: &TestContext, name: &str) -> PathBuf {
    let id = ctx.show(name)["id"].as_str().unwrap().to_owned();
    ctx.home.join("vms").join(id)
}

/// SHA-256 of every file in `dir`.
fn checksums(dir: &Path) -> BTreeMap<String, String> {
    entries(dir)
        .into_iter()
        .filter(|name| name != "handles.json")
        .map(|name| {
            let out = Command::new("sha256sum")
                .arg(dir.join(&name))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            (name, text.split(' ').next().unwrap().to_owned())
        })
        .collect()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Image staging directories left under the images directory.
#[cfg(feature = "fault-injection")]
fn staging_dirs(ctx: &TestContext) -> Vec<String> {
    entries(&ctx.home.join("images"))
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

/// A stopped VM `a` of image `base` whose root disk a guest wrote into:
/// a mark, an SSH host key, a machine id and a log.
fn stopped_vm_with_a_written_root(ctx: &TestContext) -> PathBuf {
    ctx.ok(&create_small("a").with(&["--no-start"]));
    assert_eq!(ctx.show("a")["cow_strategy"], "copy");
    let dir = vm_dir(ctx, "a");
    let host_file = ctx.dir.path().join("content");
    std::fs::write(&host_file, "kept\n").unwrap();
    let host = host_file.display();
    debugfs_script(
        &dir.join("root.ext4"),
        &format!(
            "mkdir /etc\nmkdir /etc/ssh\nmkdir /var\nmkdir /var/log\nmkdir /var/log/journal\n\
             write {host} /etc/committed-mark\nwrite {host} /etc/ssh/ssh_host_ed25519_key\n\
             write {host} /etc/ssh/sshd_config\nwrite {host} /etc/machine-id\n\
             write {host} /var/log/syslog\nmkdir /var/log/journal/0123\n\
             write {host} /var/log/journal/0123/system.journal\n"
        ),
    );
    dir
}

#[test]
fn a_stopped_vm_becomes_an_image_fit_to_copy() {
    let Some(ctx) = faulty_vmm_context("") else {
        return;
    };
    let dir = stopped_vm_with_a_written_root(&ctx);
    let before = checksums(&dir);

    let out = ctx.run(&["image", "commit", "a", "snap", "--default"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("committed VM a as image snap: the root from a clone of its root disk"),
        "{stderr}"
    );

    let image = ctx.home.join("images/snap");
    let rootfs = image.join("rootfs.ext4");
    assert_eq!(cat(&rootfs, "/etc/committed-mark"), "kept\n");
    assert_eq!(names(&rootfs, "/etc/ssh"), ["sshd_config"]);
    assert_eq!(cat(&rootfs, "/etc/machine-id"), "");
    assert_eq!(mode(&rootfs, "/etc/machine-id"), "0444");
    assert_eq!(names(&rootfs, "/var/log"), ["journal"]);
    assert!(names(&rootfs, "/var/log/journal").is_empty());
    assert_eq!(checksums(&dir), before, "the VM's files changed");

    let shown = ctx.json(&["image", "show", "snap", "--json"]);
    assert_eq!(shown["source"], "commit");
    assert_eq!(shown["origin"], "committed from VM a of image base");
    assert_eq!(shown["committed_from"]["vm"], "a");
    assert_eq!(shown["committed_from"]["image"], "base");
    assert_eq!(shown["default"], true);
    let text = ctx.ok(&["image", "show", "snap"]);
    assert!(
        text.contains("origin        committed from VM a of image base"),
        "{text}"
    );
    let listed = ctx.json(&["image", "ls", "--json"]);
    let base = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "base")
        .unwrap();
    assert_eq!(base["origin"], "imported");
    assert!(base.get("committed_from").is_none());
    // The new image's kernel is the base image's file, not a copy.
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    assert_eq!(
        ino(&image.join("vmlinux")),
        ino(&ctx.home.join("images/base/vmlinux"))
    );

    // The source VM still starts; a VM of the new image sees the mark.
    ctx.ok(&["vm", "start", "a", "--no-wait"]);
    ctx.ok(&["vm", "stop", "a", "--force"]);
    ctx.ok(&create_small("b").with(&["--no-start"]));
    assert_eq!(ctx.show("b")["image"], "snap");
    let b_root = vm_dir(&ctx, "b").join("root.ext4");
    assert_eq!(cat(&b_root, "/etc/committed-mark"), "kept\n");
    ctx.assert_nothing_left("after the commit");
}

#[test]
fn with_work_the_work_disk_becomes_the_seed_shrunk_without_banger_s_key() {
    let Some(ctx) = faulty_vmm_context("") else {
        return;
    };
    ctx.ok(&[
        "vm",
        "create",
        "a",
        "--no-start",
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--work-size",
        "256M",
    ]);
    let dir = vm_dir(&ctx, "a");
    let work = dir.join("work.ext4");
    let host_file = ctx.dir.path().join("content");
    std::fs::write(&host_file, "work\n").unwrap();
    debugfs(
        &work,
        &format!("write {} /work-mark", host_file.display()),
        true,
    );
    // Another key beside banger's stays.
    let keys = format!(
        "{}ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOther me\n",
        cat(&work, "/.ssh/authorized_keys")
    );
    assert!(keys.starts_with("ssh-ed25519 "), "{keys}");
    std::fs::write(&host_file, &keys).unwrap();
    debugfs_script(
        &work,
        &format!(
            "rm /.ssh/authorized_keys\ncd /.ssh\nwrite {} authorized_keys\nsif /.ssh/authorized_keys mode 0100600\n",
            host_file.display()
        ),
    );
    let before = checksums(&dir);

    ctx.ok(&["image", "commit", "a", "worked", "--with-work"]);
    let seed = ctx.home.join("images/worked/work-seed.ext4");
    assert!(
        size(&seed) < size(&work) / 4,
        "seed {} bytes, work {}",
        size(&seed),
        size(&work)
    );
    assert_eq!(cat(&seed, "/work-mark"), "work\n");
    assert_eq!(
        cat(&seed, "/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOtherKeyOtherKeyOtherKeyOther me\n"
    );
    assert_eq!(mode(&seed, "/.ssh/authorized_keys"), "0600");
    assert_eq!(checksums(&dir), before, "the VM's files changed");

    // Without --with-work, the image's seed is the base image's.
    ctx.ok(&["image", "commit", "a", "plain"]);
    let plain = ctx.home.join("images/plain/work-seed.ext4");
    assert!(names(&plain, "/").iter().all(|n| n != "work-mark"));

    // A VM of the new image starts from that work disk (and, its image
    // not booting banger's initramfs, gets banger's key written there).
    ctx.ok(&create_small("b").with(&["--no-start", "--image", "worked"]));
    let b_work = vm_dir(&ctx, "b").join("work.ext4");
    assert_eq!(cat(&b_work, "/work-mark"), "work\n");
    let b_keys = cat(&b_work, "/.ssh/authorized_keys");
    assert!(b_keys.ends_with(" banger\n"), "{b_keys}");
}

#[test]
fn what_commit_refuses_it_refuses_before_touching_anything() {
    let Some(ctx) = faulty_vmm_context("") else {
        return;
    };
    ctx.ok(&create_small("up").with(&["--no-wait"]));
    ctx.ok(&create_small("down").with(&["--no-start"]));
    let images = entries(&ctx.home.join("images"));

    let running = ctx.fails(1, &["image", "commit", "up", "new"]);
    assert!(
        running.contains("VM up is running; stop it first: banger vm stop up"),
        "{running}"
    );
    let unknown = ctx.fails(1, &["image", "commit", "nope", "new"]);
    assert!(unknown.contains("no VM named \"nope\""), "{unknown}");
    let exists = ctx.fails(2, &["image", "commit", "down", "base"]);
    assert!(
        exists.contains("an image named \"base\" already exists"),
        "{exists}"
    );
    let invalid = ctx.fails(2, &["image", "commit", "down", "Not_An_Image"]);
    assert!(invalid.contains("invalid image name"), "{invalid}");

    assert_eq!(entries(&ctx.home.join("images")), images);
    assert_eq!(ctx.ok(&["image", "ls", "-q"]), "base\n");
    assert_eq!(ctx.show("up")["state"], "running");
    ctx.ok(&["vm", "stop", "up", "--force"]);
}

/// A newc cpio whose first entry is banger's initramfs marker: what makes
/// an image boot banger's initramfs, as far as banger can tell.
fn banger_initramfs(path: &Path) {
    let mut out = Vec::new();
    for (name, mode) in [("banger-initramfs-seed-1", 0o100_644u32), ("TRAILER!!!", 0)] {
        let header = format!(
            "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    out.resize(512, 0);
    std::fs::write(path, out).unwrap();
}

#[test]
fn an_overlay_root_commits_as_the_merged_view_its_guest_saw() {
    let Some(ctx) = faulty_vmm_context("") else {
        return;
    };
    // A seeded image whose rootfs has /etc/base and /etc/gone.
    let tree = ctx.dir.path().join("lower");
    std::fs::create_dir_all(tree.join("etc/ssh")).unwrap();
    std::fs::write(tree.join("etc/base"), "base\n").unwrap();
    std::fs::write(tree.join("etc/gone"), "gone\n").unwrap();
    std::fs::write(tree.join("etc/machine-id"), "0123\n").unwrap();
    let rootfs = ctx.dir.path().join("seeded.ext4");
    banger::host::disk::ext4::mkfs_from_dir(&tree, &rootfs, 64 << 20, "rootfs").unwrap();
    let initrd = ctx.dir.path().join("initrd.img");
    banger_initramfs(&initrd);
    let kernel = banger_testkit::vmlinux();
    ctx.ok([
        "image",
        "import",
        "seeded",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
    ]);
    ctx.ok(&create_small("o").with(&["--no-start", "--image", "seeded"]));
    assert_eq!(ctx.show("o")["cow_strategy"], "overlay");

    // Never booted: the image's rootfs is the root.
    ctx.ok(&["image", "commit", "o", "unbooted"]);
    let unbooted = ctx.home.join("images/unbooted/rootfs.ext4");
    assert_eq!(names(&unbooted, "/etc").len(), 4);

    // As its first boot leaves it: the upper layer in /root, the overlay's
    // work directory in /work; a new file, a host key and a whiteout.
    let dir = vm_dir(&ctx, "o");
    let upper = dir.join("upper.ext4");
    let layer = ctx.dir.path().join("upper");
    std::fs::create_dir_all(layer.join("root/etc/ssh")).unwrap();
    std::fs::create_dir_all(layer.join("work")).unwrap();
    std::fs::write(layer.join("root/etc/new"), "new\n").unwrap();
    std::fs::write(layer.join("root/etc/ssh/ssh_host_ed25519_key"), "k\n").unwrap();
    let whiteout = layer.join("root/etc/gone");
    let made = Command::new("mknod")
        .arg(&whiteout)
        .args(["c", "0", "0"])
        .status()
        .unwrap();
    assert!(made.success());
    let upper_size = size(&upper);
    std::fs::remove_file(&upper).unwrap();
    banger::host::disk::ext4::mkfs_from_dir(&layer, &upper, upper_size, "banger-upper").unwrap();
    // Never unmounted by its guest: its journal is to be replayed.
    debugfs(&upper, "feature needs_recovery", true);
    let before = checksums(&dir);
    let image_before = checksums(&ctx.home.join("images/seeded"));

    let out = ctx.run(&["image", "commit", "o", "merged"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the merged view of its overlay root"),
        "{stderr}"
    );
    let merged = ctx.home.join("images/merged/rootfs.ext4");
    let mut etc = names(&merged, "/etc");
    etc.sort();
    assert_eq!(etc, ["base", "machine-id", "new", "ssh"]);
    assert_eq!(cat(&merged, "/etc/new"), "new\n");
    assert!(names(&merged, "/etc/ssh").is_empty());
    assert_eq!(cat(&merged, "/etc/machine-id"), "");
    assert_eq!(size(&merged), 64 << 20, "sized like the image's rootfs");
    assert_eq!(checksums(&dir), before, "the VM's files changed");
    assert_eq!(checksums(&ctx.home.join("images/seeded")), image_before);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*ctx.dir.path().to_string_lossy()),
        "{mounts}"
    );
    ctx.assert_nothing_left("after merging the overlay");
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_commit_killed_midway_registers_nothing_and_gc_sweeps_it() {
    use std::os::unix::process::ExitStatusExt;
    let Some(ctx) = faulty_vmm_context("") else {
        return;
    };
    stopped_vm_with_a_written_root(&ctx);
    let out = ctx
        .cmd(&["image", "commit", "a", "half", "--with-work"])
        .env("BANGER_FAULT", "commit:staged")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    assert_eq!(ctx.ok(&["image", "ls", "-q"]), "base\n");
    assert_eq!(staging_dirs(&ctx).len(), 1);
    let swept = ctx.ok(&["gc"]);
    assert!(swept.contains("image-staging"), "{swept}");
    assert!(staging_dirs(&ctx).is_empty());
    assert!(!ctx.home.join("images/half").exists());
    // The VM is as it was, and the same commit now succeeds.
    ctx.ok(&["vm", "start", "a", "--no-wait"]);
    ctx.ok(&["vm", "stop", "a", "--force"]);
    ctx.ok(&["image", "commit", "a", "half", "--with-work"]);
    ctx.assert_nothing_left("after the crash and gc");
}
