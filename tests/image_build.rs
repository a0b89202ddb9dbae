//! Image builds against the real tools: apt, dpkg-deb, debootstrap, mkfs.ext4
//! (root, network), and the built image booted by the test VMM.
//!
//! The built image is the test kit's (`banger_testkit::image`), cached under
//! the target dir and keyed by the build's inputs, so reruns only re-check it.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use banger::host::image::{self, BuildOptions, ImageError};
use banger_testkit::image::{
    GuestImage, Recorder, SUITE, assert_no_scratch, build_lock, guest_image, options, sha256_hex,
};
use banger_testkit::netns::in_new_netns;
use banger_testkit::shim::Shim;
use banger_testkit::{Need, require, run};

/// Stand-in agent for builds that fail before installing it.
const STAND_IN_AGENT: &str = "/bin/busybox";

/// The test image, or `None` after saying why this host cannot build it.
#[track_caller]
fn built_image() -> Option<&'static GuestImage> {
    guest_image("image")
}

/// Runs `debugfs -R request` on `fs_image` and returns stdout.
fn debugfs_bytes(fs_image: &Path, request: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(fs_image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "debugfs {request}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn debugfs(fs_image: &Path, request: &str) -> String {
    String::from_utf8_lossy(&debugfs_bytes(fs_image, request)).into_owned()
}

/// `debugfs stat`'s "Mode:" value and whether the file exists.
fn mode_of(fs_image: &Path, path: &str) -> Option<String> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(fs_image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (_, rest) = text.split_once("Mode:")?;
    rest.split_whitespace().next().map(str::to_string)
}

fn file_type_of(fs_image: &Path, path: &str) -> Option<String> {
    let text = debugfs(fs_image, &format!("stat {path}"));
    let (_, rest) = text.split_once("Type:")?;
    rest.split_whitespace().next().map(str::to_string)
}

#[test]
fn kernel_is_the_elf_vmlinux_with_a_pvh_note() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let manifest = &built.manifest;
    let vmlinux = fs::read(dir.join(image::VMLINUX)).unwrap();
    image::check_pvh_note(&vmlinux, "vmlinux").unwrap();
    assert_eq!(
        image::kernel_release(&vmlinux).as_deref(),
        Some(manifest.kernel_version.as_str())
    );
    assert!(
        manifest.kernel_version.ends_with("-cloud-amd64"),
        "{}",
        manifest.kernel_version
    );
    // The fixture was unpacked by the lz4 CLI from the same package, when versions agree.
    let fixture_path = banger_testkit::vmlinux();
    match fs::read(&fixture_path) {
        Ok(fixture) if image::kernel_release(&fixture) == image::kernel_release(&vmlinux) => {
            assert!(
                fixture == vmlinux,
                "vmlinux differs from {}",
                fixture_path.display()
            );
        }
        _ => eprintln!(
            "not comparing with {}: absent or another kernel version",
            fixture_path.display()
        ),
    }
}

#[test]
fn initramfs_holds_init_busybox_and_the_modules_in_load_order() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let list = Command::new("cpio")
        .args(["-t", "--quiet", "-F"])
        .arg(dir.join(image::INITRD))
        .output()
        .unwrap();
    assert!(list.status.success());
    let names = String::from_utf8(list.stdout).unwrap();
    let names: Vec<&str> = names.lines().collect();
    for want in [
        "init",
        "bin/busybox",
        "bin/sh",
        "bin/switch_root",
        "dev/console",
        "lib/modules/load-order",
        "lib/modules/virtio_mmio.ko",
        "lib/modules/virtio_blk.ko",
        "lib/modules/virtio_net.ko",
        "lib/modules/vmw_vsock_virtio_transport.ko",
        "lib/modules/overlay.ko",
        "bin/cpio",
        "bin/chroot",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // Its first entry marks it as banger's: VMs of the image get a seed
    // drive and (without dm or reflink) an overlay root.
    assert_eq!(names.first(), Some(&"banger-initramfs-seed-1"), "{names:?}");
    assert!(banger::host::image::is_banger_initramfs(
        &dir.join(image::INITRD)
    ));
    let order = Command::new("cpio")
        .args(["-i", "--quiet", "--to-stdout", "-F"])
        .arg(dir.join(image::INITRD))
        .arg("lib/modules/load-order")
        .output()
        .unwrap();
    let order = String::from_utf8(order.stdout).unwrap();
    let position = |m: &str| {
        order
            .lines()
            .position(|l| l == m)
            .unwrap_or_else(|| panic!("{m} not in {order}"))
    };
    assert!(position("virtio_ring.ko") < position("virtio.ko"));
    assert!(position("virtio.ko") < position("virtio_mmio.ko"));
    assert!(position("failover.ko") < position("net_failover.ko"));
    assert!(position("net_failover.ko") < position("virtio_net.ko"));
    assert!(position("vsock.ko") < position("vmw_vsock_virtio_transport_common.ko"));
    assert!(
        position("vmw_vsock_virtio_transport_common.ko")
            < position("vmw_vsock_virtio_transport.ko")
    );
}

#[test]
fn rootfs_has_sshd_the_agent_and_banger_guest_setup() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let manifest = &built.manifest;
    let rootfs = dir.join(image::ROOTFS);
    assert_eq!(
        file_type_of(&rootfs, "/usr/sbin/sshd").as_deref(),
        Some("regular")
    );

    let agent = debugfs_bytes(&rootfs, "cat /usr/local/bin/banger-agent");
    assert!(
        agent == fs::read(&built.agent).unwrap(),
        "the agent in the rootfs differs from {}",
        built.agent.display()
    );
    assert_eq!(
        mode_of(&rootfs, "/usr/local/bin/banger-agent").as_deref(),
        Some("0755")
    );
    for unit in [
        "banger-agent",
        "banger-net",
        "banger-grow-work",
        "banger-grow-root",
    ] {
        let link = format!("/etc/systemd/system/multi-user.target.wants/{unit}.service");
        assert_eq!(
            file_type_of(&rootfs, &link).as_deref(),
            Some("symlink"),
            "{link}"
        );
        let text = debugfs(&rootfs, &format!("cat /etc/systemd/system/{unit}.service"));
        assert!(text.contains("[Service]"), "{unit}: {text}");
    }
    assert!(
        debugfs(&rootfs, "cat /etc/systemd/system/banger-agent.service")
            .contains("ExecStart=/usr/local/bin/banger-agent")
    );
    // The guest makes no host keys of its own: banger gives it one.
    assert_eq!(
        file_type_of(&rootfs, "/etc/systemd/system/banger-ssh-keygen.service"),
        None
    );
    assert!(
        debugfs(&rootfs, "stat /etc/systemd/system/ctrl-alt-del.target")
            .contains("poweroff.target")
    );
    // A trimmed boot: units a microVM does not use are masked, the agent
    // starts right after banger-net, the journal is volatile.
    for unit in [
        "e2scrub_reap.service",
        "getty-static.service",
        "sys-kernel-debug.mount",
    ] {
        assert!(
            debugfs(&rootfs, &format!("stat /etc/systemd/system/{unit}")).contains("/dev/null"),
            "{unit} is not masked"
        );
    }
    let agent_unit = debugfs(&rootfs, "cat /etc/systemd/system/banger-agent.service");
    assert!(
        agent_unit.contains("DefaultDependencies=no")
            && agent_unit.contains("After=banger-net.service"),
        "{agent_unit}"
    );
    assert!(
        debugfs(&rootfs, "cat /etc/systemd/journald.conf.d/banger.conf")
            .contains("Storage=volatile")
    );

    let fstab = debugfs(&rootfs, "cat /etc/fstab");
    assert!(
        fstab.lines().any(|l| l == "/dev/vda / ext4 defaults 0 1"),
        "{fstab}"
    );
    assert!(
        fstab
            .lines()
            .any(|l| l == "/dev/vdb /root ext4 defaults,nofail 0 2"),
        "{fstab}"
    );

    let sshd = debugfs(&rootfs, "cat /etc/ssh/sshd_config.d/banger.conf");
    for line in [
        "PasswordAuthentication no",
        "PermitRootLogin prohibit-password",
        "KbdInteractiveAuthentication no",
        "HostKey /etc/ssh/ssh_host_ed25519_key",
        "AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/banger/authorized_keys",
    ] {
        assert!(sshd.lines().any(|l| l == line), "{line} missing: {sshd}");
    }
    assert!(
        debugfs(&rootfs, "cat /etc/ssh/sshd_config")
            .contains("Include /etc/ssh/sshd_config.d/*.conf")
    );
    let ssh_dir = debugfs(&rootfs, "ls /etc/ssh");
    assert!(!ssh_dir.contains("ssh_host_"), "baked host keys: {ssh_dir}");
    // Every VM gets a machine-id of its own at its first boot.
    assert_eq!(debugfs(&rootfs, "cat /etc/machine-id"), "");
    assert_eq!(mode_of(&rootfs, "/etc/machine-id").as_deref(), Some("0444"));

    let shadow = debugfs(&rootfs, "cat /etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with("root:*:")), "{shadow}");
    let modules = debugfs(
        &rootfs,
        &format!("ls /usr/lib/modules/{}", manifest.kernel_version),
    );
    assert!(modules.contains("modules.dep"), "{modules}");
    let archives = debugfs(&rootfs, "ls /var/cache/apt/archives");
    assert!(!archives.contains(".deb"), "{archives}");
    assert_eq!(run("e2label", &[rootfs.to_str().unwrap()]).trim(), "rootfs");
}

#[test]
fn work_seed_is_roots_skeleton_with_a_private_ssh_dir() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let seed = dir.join(image::WORK_SEED);
    assert_eq!(mode_of(&seed, "/").as_deref(), Some("0700"));
    assert_eq!(mode_of(&seed, "/.ssh").as_deref(), Some("0700"));
    assert_eq!(
        mode_of(&seed, "/.ssh/authorized_keys").as_deref(),
        Some("0600")
    );
    assert!(debugfs(&seed, "stat /.ssh/authorized_keys").contains("Size: 0"));
    assert_eq!(file_type_of(&seed, "/.bashrc").as_deref(), Some("regular"));
    assert_eq!(file_type_of(&seed, "/.profile").as_deref(), Some("regular"));
    assert!(debugfs(&seed, "stat /.ssh").contains("User:     0"));
    assert_eq!(
        run("e2label", &[seed.to_str().unwrap()]).trim(),
        "banger-work"
    );
}

#[test]
fn built_and_imported_images_get_the_same_work_seed() {
    let Some(built) = built_image() else {
        return;
    };
    let built = built.dir.join(image::WORK_SEED);
    let tmp = tempfile::tempdir().unwrap();
    let imported = tmp.path().join(image::WORK_SEED);
    banger::host::disk::ext4::make_work_seed(&imported).unwrap();
    // `ls -p` lines are `/inode/mode/uid/gid/name/size/`; inodes may differ.
    let listing = |seed: &Path, dir: &str| {
        let mut entries: Vec<String> = debugfs(seed, &format!("ls -p {dir}"))
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('/').skip(2).collect::<Vec<_>>().join("/"))
            .collect();
        entries.sort();
        entries
    };
    for dir in ["/", "/.ssh"] {
        assert_eq!(listing(&built, dir), listing(&imported, dir), "{dir}");
    }
    for file in ["/.bashrc", "/.profile", "/.ssh/authorized_keys"] {
        let cat = format!("cat {file}");
        assert_eq!(debugfs(&built, &cat), debugfs(&imported, &cat), "{file}");
    }
}

#[test]
fn manifest_checksums_match_the_files() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let manifest = &built.manifest;
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(image::MANIFEST)).unwrap()).unwrap();
    assert_eq!(json["suite"], SUITE);
    assert!(
        json["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "openssh-server"),
        "{json}"
    );
    let created = json["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    let mut names: Vec<&String> = manifest.files.keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            image::INITRD,
            image::ROOTFS,
            image::VMLINUX,
            image::WORK_SEED
        ]
    );
    for (name, file) in &manifest.files {
        let out = Command::new("sha256sum")
            .arg(dir.join(name))
            .output()
            .unwrap();
        let sum = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            sum.split_whitespace().next(),
            Some(file.sha256.as_str()),
            "{name}"
        );
        assert_eq!(
            fs::metadata(dir.join(name)).unwrap().len(),
            file.size,
            "{name}"
        );
    }
    assert_eq!(
        manifest.agent_sha256,
        sha256_hex(&fs::read(&built.agent).unwrap())
    );
}

#[test]
fn a_user_kernel_and_initrd_are_used_as_given_without_modules() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let _guard = build_lock();
    let tmp = tempfile::tempdir().unwrap();
    // Also a package of the user's, which must land in the rootfs.
    let opts = BuildOptions {
        kernel: Some(dir.join(image::VMLINUX)),
        initrd: Some(dir.join(image::INITRD)),
        size: Some(1 << 30),
        packages: vec!["less".to_string()],
        ..options(&built.agent)
    };
    let out = tmp.path().join("image");
    let progress = Recorder::default();
    let manifest = image::build(&opts, &out, &progress).unwrap();

    let stages = progress.stages();
    assert!(
        !stages.iter().any(|s| s == "download" || s == "initramfs"),
        "{stages:?}"
    );
    for name in [image::VMLINUX, image::INITRD] {
        assert!(
            fs::read(out.join(name)).unwrap() == fs::read(dir.join(name)).unwrap(),
            "{name} changed"
        );
        assert_eq!(manifest.files[name], built.manifest.files[name], "{name}");
    }
    assert_eq!(manifest.kernel_version, built.manifest.kernel_version);
    let rootfs = out.join(image::ROOTFS);
    assert_eq!(fs::metadata(&rootfs).unwrap().len(), 1 << 30);
    let modules = format!("/usr/lib/modules/{}", built.manifest.kernel_version);
    assert_eq!(
        mode_of(&rootfs, &modules),
        None,
        "modules installed for a user kernel"
    );
    assert_eq!(
        mode_of(&rootfs, "/usr/local/bin/banger-agent").as_deref(),
        Some("0755")
    );
    assert_eq!(
        file_type_of(&rootfs, "/usr/bin/less").as_deref(),
        Some("regular")
    );
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join(image::MANIFEST)).unwrap()).unwrap();
    assert!(
        json["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "less"),
        "{json}"
    );
    assert!(manifest.packages.iter().any(|p| p == "less"));
    assert_no_scratch(&opts.cache_dir);
}

#[test]
fn a_size_too_small_for_the_rootfs_is_refused_and_cleaned_up() {
    let Some(built) = built_image() else {
        return;
    };
    let dir = &built.dir;
    let _guard = build_lock();
    let tmp = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        kernel: Some(dir.join(image::VMLINUX)),
        size: Some(100 << 20),
        ..options(&built.agent)
    };
    let out = tmp.path().join("image");
    let err = image::build(&opts, &out, &Recorder::default()).unwrap_err();
    assert!(matches!(err, ImageError::InvalidOptions(_)), "{err}");
    assert!(
        err.to_string().contains("--size 100 MiB cannot hold"),
        "{err}"
    );
    assert_nothing_left(&out, &opts.cache_dir);
}

/// A build with a user kernel and a suite that does not exist.
fn failing_build(kernel: &Path, suite: &str) -> (ImageError, PathBuf, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        suite: suite.to_string(),
        kernel: Some(kernel.to_path_buf()),
        initrd: None,
        size: None,
        packages: Vec::new(),
        agent_binary: PathBuf::from(STAND_IN_AGENT),
        cache_dir: tmp.path().join("cache"),
    };
    let out = tmp.path().join("out");
    let err = image::build(&opts, &out, &Recorder::default()).unwrap_err();
    (err, out, opts.cache_dir, tmp)
}

fn assert_nothing_left(out: &Path, cache: &Path) {
    assert!(!out.exists(), "{} left behind", out.display());
    assert_no_scratch(cache);
}

#[test]
fn a_failed_build_leaves_no_output_and_no_scratch() {
    require!("image", Need::Root);
    // A user kernel gets written to the output before debootstrap fails.
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("vmlinux");
    fs::write(&kernel, b"\x7fELF\x02\x01\x01 a user kernel").unwrap();
    let (err, out, cache, _keep) = failing_build(&kernel, "no-such-suite");
    assert!(err.to_string().contains("debootstrap failed"), "{err}");
    assert_nothing_left(&out, &cache);
}

#[test]
fn a_user_kernel_must_be_elf() {
    require!("image", Need::Root);
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("bzImage");
    fs::write(&kernel, b"MZ\x00\x00 not an ELF kernel").unwrap();
    let (err, out, cache, _keep) = failing_build(&kernel, SUITE);
    assert!(matches!(err, ImageError::NotElf { .. }), "{err}");
    assert!(err.to_string().contains("bzImage"), "{err}");
    assert_nothing_left(&out, &cache);
}

#[test]
fn guest_network_script_applies_the_ip_argument() {
    require!("image", Need::Root);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    fs::write(
        t.join("cmdline"),
        "console=ttyS0 reboot=k ip=172.30.0.5::172.30.0.1:255.255.255.0:scratch:eth0:off:172.30.0.1 panic=1\n",
    )
    .unwrap();
    for f in ["hostname", "hosts", "resolv.conf"] {
        fs::write(t.join(f), "127.0.0.1\tlocalhost\n127.0.1.1\told-name\n").unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/guest/banger-net");
    // Own network, UTS and mount namespaces; the guest files are bind-mounted
    // over /etc so the host's stay untouched.
    let inner = r#"set -e
t=$1; script=$2
mount -t sysfs sysfs /sys
mount --bind "$t/cmdline" /proc/cmdline
mount --bind "$t/hostname" /etc/hostname
mount --bind "$t/hosts" /etc/hosts
mount --bind "$t/resolv.conf" /etc/resolv.conf
ip link add eth0 type veth peer name peer0
sh "$script"
echo "addr $(ip -4 -o addr show dev eth0 | awk '{print $4}')"
echo "route $(ip route show default)"
echo "uts $(cat /proc/sys/kernel/hostname)"
"#;
    let out = Command::new("unshare")
        .args([
            "--net",
            "--uts",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            inner,
            "sh",
        ])
        .arg(t)
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("addr 172.30.0.5/24"), "{stdout}");
    assert!(
        stdout.contains("route default via 172.30.0.1 dev eth0"),
        "{stdout}"
    );
    assert!(stdout.contains("uts scratch"), "{stdout}");
    assert_eq!(fs::read_to_string(t.join("hostname")).unwrap(), "scratch\n");
    assert_eq!(
        fs::read_to_string(t.join("resolv.conf")).unwrap(),
        "nameserver 172.30.0.1\n"
    );
    let hosts = fs::read_to_string(t.join("hosts")).unwrap();
    assert!(
        hosts.contains("127.0.0.1\tlocalhost") && hosts.contains("127.0.1.1\tscratch"),
        "{hosts}"
    );
    assert!(!hosts.contains("old-name"), "{hosts}");
}

/// The guest's address on the TAP, and the host's.
const GUEST_IP: &str = "10.0.2.15";
const HOST_IP: &str = "10.0.2.2";

/// The test image booted by the test VMM with Firecracker's device model:
/// root disk (a copy), a 1 GiB copy of the work seed holding our key, a
/// seed drive with a host key, and a NIC on TAP `imgtap0`, which must exist
/// in the caller's namespace.
struct Guest {
    shim: Shim,
    key: PathBuf,
}

impl Guest {
    fn boot(built: &GuestImage) -> Guest {
        let shim = Shim::start();
        let d = shim.dir.path();
        let key = d.join("key");
        banger_testkit::ssh_keygen(&key);
        let root = d.join("root.ext4");
        let status = Command::new("cp")
            .arg("--sparse=always")
            .arg(built.rootfs())
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        let work = d.join("work.ext4");
        fs::copy(built.work_seed(), &work).unwrap();
        let script = format!(
            "rm /.ssh/authorized_keys\nwrite {} /.ssh/authorized_keys\nset_inode_field /.ssh/authorized_keys mode 0100600\n",
            key.with_extension("pub").display()
        );
        fs::write(d.join("debugfs.cmds"), script).unwrap();
        let cmds = d.join("debugfs.cmds");
        run(
            "debugfs",
            &["-w", "-f", cmds.to_str().unwrap(), work.to_str().unwrap()],
        );
        fs::File::options()
            .write(true)
            .open(&work)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();

        shim.put_ok("/machine-config", r#"{"vcpu_count":2,"mem_size_mib":1024}"#);
        let boot_args = format!(
            "console=ttyS0 reboot=k panic=1 \
             ip={GUEST_IP}::{HOST_IP}:255.255.255.0:imagetest:eth0:off:10.0.2.3"
        );
        shim.put_ok(
            "/boot-source",
            &serde_json::json!({
                "kernel_image_path": built.vmlinux(),
                "initrd_path": built.initrd(),
                "boot_args": boot_args,
            })
            .to_string(),
        );
        // The seed drive (/dev/vdc): the guest makes no SSH host key of its own.
        let host_key = d.join("host_key");
        let host_key_pub = banger_testkit::ssh_keygen(&host_key);
        let seed = d.join("seed.img");
        let bytes = image::seed::Seed {
            authorized_keys: &fs::read_to_string(key.with_extension("pub")).unwrap(),
            host_key: &fs::read_to_string(&host_key).unwrap(),
            host_key_pub: &host_key_pub,
            root: image::seed::RootLayout::Disk,
        }
        .to_bytes()
        .unwrap();
        fs::write(&seed, bytes).unwrap();
        for (id, path, root, read_only) in [
            ("rootfs", &root, true, false),
            ("work", &work, false, false),
            ("seed", &seed, false, true),
        ] {
            shim.put_ok(
                &format!("/drives/{id}"),
                &serde_json::json!({
                    "drive_id": id,
                    "path_on_host": path,
                    "is_root_device": root,
                    "is_read_only": read_only,
                })
                .to_string(),
            );
        }
        shim.put_ok(
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"imgtap0","guest_mac":"06:00:0a:00:02:0f"}"#,
        );
        shim.instance_start();
        Guest { shim, key }
    }

    fn ssh(&self, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args([
                "-q",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
            ])
            .args([
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg("-i")
            .arg(&self.key)
            .arg(format!("root@{GUEST_IP}"))
            .arg(command)
            .output()
            .unwrap()
    }
}

#[test]
fn image_boots_to_ssh_with_network_work_disk_and_clean_poweroff() {
    let Some(built) = built_image() else {
        return;
    };
    require!("image", Need::Program("qemu-system-x86_64"));
    in_new_netns(|| {
        run("ip", &["tuntap", "add", "dev", "imgtap0", "mode", "tap"]);
        run(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", "imgtap0"],
        );
        run("ip", &["link", "set", "imgtap0", "up"]);
        let mut guest = Guest::boot(built);
        let started = Instant::now();
        while !guest.ssh("true").status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(240),
                "no SSH within 240 s; console:\n{}",
                guest.shim.console_text()
            );
            assert!(
                guest.shim.child.try_wait().unwrap().is_none(),
                "the VMM exited:\n{}\n{}",
                guest.shim.stderr_text(),
                guest.shim.console_text()
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        eprintln!(
            "SSH answered after {:.1} s",
            started.elapsed().as_secs_f64()
        );

        let out = guest.ssh(
            "hostname; ip -4 -o addr show dev eth0 | awk '{print $4}'; ip route show default; \
             cat /etc/resolv.conf; findmnt -n -o SOURCE /root; stat -c %a /root/.ssh; \
             df --output=size -B1M /root | tail -1; lsmod | awk '{print $1}' | grep -c -x -e vsock -e virtio_net",
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines[0], "imagetest", "{text}");
        assert_eq!(lines[1], format!("{GUEST_IP}/24"), "{text}");
        assert!(
            lines[2].starts_with(&format!("default via {HOST_IP} dev eth0")),
            "{text}"
        );
        assert_eq!(lines[3], "nameserver 10.0.2.3", "{text}");
        assert_eq!(lines[4], "/dev/vdb", "{text}");
        assert_eq!(lines[5], "700", "{text}");
        let work_mib: u64 = lines[6].parse().unwrap();
        assert!(
            work_mib > 900,
            "work disk not grown to the device: {work_mib} MiB"
        );
        assert_eq!(lines[7], "2", "{text}");

        // Ctrl-Alt-Del reaches ctrl-alt-del.target, which powers the VM off.
        guest.shim.ctrl_alt_del();
        guest.shim.assert_exits_cleanly(Duration::from_secs(60));
        let console = guest.shim.console_text();
        assert!(console.contains("reboot: Power down"), "{console}");
    });
}
