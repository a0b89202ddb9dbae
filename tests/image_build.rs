//! Image builds against the real tools: apt, dpkg-deb, debootstrap, mkfs.ext4 (root, network).
//!
//! The built image is cached in `$CARGO_TARGET_DIR/test-images/<key>`, keyed
//! by the build's inputs, so reruns only re-check it.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use banger::host::image::{self, BuildOptions, ImageError, Manifest, Progress};
use sha2::{Digest, Sha256};

/// Stand-in agent: a static binary that runs in any guest.
const AGENT: &str = "/bin/busybox";
const SUITE: &str = "bookworm";
const FIXTURE_VMLINUX: &str = "/work/main/target/test-deps/vmlinux";

/// Records the stages and prints them with their start times (seen with `--nocapture`).
struct Recorder {
    stages: Mutex<Vec<String>>,
    started: std::time::Instant,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            stages: Mutex::default(),
            started: std::time::Instant::now(),
        }
    }
}

impl Progress for Recorder {
    fn stage(&self, name: &str) {
        eprintln!("{:7.1} s  {name}", self.started.elapsed().as_secs_f64());
        self.stages.lock().unwrap().push(name.to_string());
    }
    fn detail(&self, msg: &str) {
        eprintln!("{:7.1} s    {msg}", self.started.elapsed().as_secs_f64());
    }
}

fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root");
    true
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key over everything that shapes the image: options, agent, the image code and guest files.
fn input_key(opts: &BuildOptions) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hasher = Sha256::new();
    hasher.update(format!(
        "{}\n{:?}\n{:?}\n",
        opts.suite, opts.packages, opts.size
    ));
    hasher.update(fs::read(&opts.agent_binary).unwrap());
    for dir in ["src/host/image", "src/host/disk", "scripts/guest"] {
        let mut paths: Vec<PathBuf> = fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        for path in paths {
            hasher.update(path.file_name().unwrap().as_encoded_bytes());
            hasher.update(fs::read(&path).unwrap());
        }
    }
    sha256_hex(&hasher.finalize())[..16].to_string()
}

/// Builds sharing the download cache run one at a time: each checks it leaves no scratch.
static BUILD: Mutex<()> = Mutex::new(());

/// Options of the test image; the cache is shared by every build under the target dir.
fn test_options() -> BuildOptions {
    BuildOptions {
        suite: SUITE.to_string(),
        kernel: None,
        initrd: None,
        size: None,
        packages: vec!["less".to_string()],
        agent_binary: PathBuf::from(AGENT),
        cache_dir: target_dir().join("test-images").join("cache"),
    }
}

/// The test image, built once per set of inputs.
fn built_image() -> (PathBuf, Manifest) {
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let base = target_dir().join("test-images");
    let opts = test_options();
    let dir = base.join(input_key(&opts));
    if let Ok(manifest) = Manifest::read(&dir.join(image::MANIFEST)) {
        return (dir, manifest);
    }
    let building = base.join(format!("building-{}", std::process::id()));
    let _ = fs::remove_dir_all(&building);
    let progress = Recorder::default();
    let started = std::time::Instant::now();
    let manifest = image::build(&opts, &building, &progress).unwrap();
    eprintln!("image build took {:.1} s", started.elapsed().as_secs_f64());
    let stages = progress.stages.lock().unwrap().clone();
    for stage in [
        "download",
        "unpack",
        "initramfs",
        "debootstrap",
        "packages",
        "agent",
        "mkfs",
    ] {
        assert!(
            stages.iter().any(|s| s == stage),
            "no {stage} stage in {stages:?}"
        );
    }
    fs::rename(&building, &dir).unwrap();
    // Images of earlier inputs are stale: keep only this one.
    for entry in fs::read_dir(&base).unwrap().flatten() {
        let name = entry.file_name();
        let stale = name.len() == 16
            && name
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_hexdigit());
        if stale && entry.path() != dir {
            fs::remove_dir_all(entry.path()).unwrap();
        }
    }
    let leftovers: Vec<_> = fs::read_dir(opts.cache_dir.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
    (dir, manifest)
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
    if skip_unless_root("kernel_is_the_elf_vmlinux_with_a_pvh_note") {
        return;
    }
    let (dir, manifest) = built_image();
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
    match fs::read(FIXTURE_VMLINUX) {
        Ok(fixture) if image::kernel_release(&fixture) == image::kernel_release(&vmlinux) => {
            assert!(fixture == vmlinux, "vmlinux differs from {FIXTURE_VMLINUX}");
        }
        _ => eprintln!("not comparing with {FIXTURE_VMLINUX}: absent or another kernel version"),
    }
}

#[test]
fn initramfs_holds_init_busybox_and_the_modules_in_load_order() {
    if skip_unless_root("initramfs_holds_init_busybox_and_the_modules_in_load_order") {
        return;
    }
    let (dir, _) = built_image();
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
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
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
    if skip_unless_root("rootfs_has_sshd_the_agent_and_banger_guest_setup") {
        return;
    }
    let (dir, manifest) = built_image();
    let rootfs = dir.join(image::ROOTFS);
    assert_eq!(
        file_type_of(&rootfs, "/usr/sbin/sshd").as_deref(),
        Some("regular")
    );
    assert_eq!(
        file_type_of(&rootfs, "/usr/bin/less").as_deref(),
        Some("regular")
    );

    let agent = debugfs_bytes(&rootfs, "cat /usr/local/bin/banger-agent");
    assert!(
        agent == fs::read(AGENT).unwrap(),
        "the agent in the rootfs differs from {AGENT}"
    );
    assert_eq!(
        mode_of(&rootfs, "/usr/local/bin/banger-agent").as_deref(),
        Some("0755")
    );
    for unit in [
        "banger-agent",
        "banger-net",
        "banger-ssh-keygen",
        "banger-grow-work",
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
    assert!(
        debugfs(&rootfs, "stat /etc/systemd/system/ctrl-alt-del.target")
            .contains("poweroff.target")
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
    ] {
        assert!(sshd.lines().any(|l| l == line), "{line} missing: {sshd}");
    }
    assert!(
        debugfs(&rootfs, "cat /etc/ssh/sshd_config")
            .contains("Include /etc/ssh/sshd_config.d/*.conf")
    );
    let ssh_dir = debugfs(&rootfs, "ls /etc/ssh");
    assert!(!ssh_dir.contains("ssh_host_"), "baked host keys: {ssh_dir}");

    let shadow = debugfs(&rootfs, "cat /etc/shadow");
    assert!(shadow.lines().any(|l| l.starts_with("root:*:")), "{shadow}");
    let modules = debugfs(
        &rootfs,
        &format!("ls /usr/lib/modules/{}", manifest.kernel_version),
    );
    assert!(modules.contains("modules.dep"), "{modules}");
    let archives = debugfs(&rootfs, "ls /var/cache/apt/archives");
    assert!(!archives.contains(".deb"), "{archives}");
    let label = Command::new("e2label").arg(&rootfs).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "rootfs");
}

#[test]
fn work_seed_is_roots_skeleton_with_a_private_ssh_dir() {
    if skip_unless_root("work_seed_is_roots_skeleton_with_a_private_ssh_dir") {
        return;
    }
    let (dir, _) = built_image();
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
    let label = Command::new("e2label").arg(&seed).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "banger-work");
}

#[test]
fn built_and_imported_images_get_the_same_work_seed() {
    if skip_unless_root("built_and_imported_images_get_the_same_work_seed") {
        return;
    }
    let (dir, _) = built_image();
    let built = dir.join(image::WORK_SEED);
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
    if skip_unless_root("manifest_checksums_match_the_files") {
        return;
    }
    let (dir, manifest) = built_image();
    let json: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(image::MANIFEST)).unwrap()).unwrap();
    assert_eq!(json["suite"], SUITE);
    assert!(
        json["packages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "less")
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
    assert_eq!(manifest.agent_sha256, sha256_hex(&fs::read(AGENT).unwrap()));
}

#[test]
fn a_user_kernel_and_initrd_are_used_as_given_without_modules() {
    if skip_unless_root("a_user_kernel_and_initrd_are_used_as_given_without_modules") {
        return;
    }
    let (dir, built) = built_image();
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        kernel: Some(dir.join(image::VMLINUX)),
        initrd: Some(dir.join(image::INITRD)),
        size: Some(1 << 30),
        ..test_options()
    };
    let out = tmp.path().join("image");
    let progress = Recorder::default();
    let manifest = image::build(&opts, &out, &progress).unwrap();

    let stages = progress.stages.lock().unwrap().clone();
    assert!(
        !stages.iter().any(|s| s == "download" || s == "initramfs"),
        "{stages:?}"
    );
    for name in [image::VMLINUX, image::INITRD] {
        assert!(
            fs::read(out.join(name)).unwrap() == fs::read(dir.join(name)).unwrap(),
            "{name} changed"
        );
        assert_eq!(manifest.files[name], built.files[name], "{name}");
    }
    assert_eq!(manifest.kernel_version, built.kernel_version);
    let rootfs = out.join(image::ROOTFS);
    assert_eq!(fs::metadata(&rootfs).unwrap().len(), 1 << 30);
    let modules = format!("/usr/lib/modules/{}", built.kernel_version);
    assert_eq!(
        mode_of(&rootfs, &modules),
        None,
        "modules installed for a user kernel"
    );
    assert_eq!(
        mode_of(&rootfs, "/usr/local/bin/banger-agent").as_deref(),
        Some("0755")
    );
    let leftovers: Vec<_> = fs::read_dir(opts.cache_dir.join("tmp")).unwrap().collect();
    assert!(leftovers.is_empty(), "scratch left behind: {leftovers:?}");
}

#[test]
fn a_size_too_small_for_the_rootfs_is_refused_and_cleaned_up() {
    if skip_unless_root("a_size_too_small_for_the_rootfs_is_refused_and_cleaned_up") {
        return;
    }
    let (dir, _) = built_image();
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let opts = BuildOptions {
        kernel: Some(dir.join(image::VMLINUX)),
        size: Some(100 << 20),
        ..test_options()
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
        agent_binary: PathBuf::from(AGENT),
        cache_dir: tmp.path().join("cache"),
    };
    let out = tmp.path().join("out");
    let err = image::build(&opts, &out, &Recorder::default()).unwrap_err();
    (err, out, opts.cache_dir, tmp)
}

fn assert_nothing_left(out: &Path, cache: &Path) {
    assert!(!out.exists(), "{} left behind", out.display());
    let scratch = cache.join("tmp");
    if scratch.exists() {
        let left: Vec<_> = fs::read_dir(&scratch).unwrap().collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
    }
}

#[test]
fn a_failed_build_leaves_no_output_and_no_scratch() {
    if skip_unless_root("a_failed_build_leaves_no_output_and_no_scratch") {
        return;
    }
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
    if skip_unless_root("a_user_kernel_must_be_elf") {
        return;
    }
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
    if skip_unless_root("guest_network_script_applies_the_ip_argument") {
        return;
    }
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

/// A QEMU `microvm` booted from the test image, killed when dropped.
struct Guest {
    qemu: std::process::Child,
    ssh_port: u16,
    key: PathBuf,
    dir: tempfile::TempDir,
}

impl Guest {
    /// Boots the image with Firecracker's device model under QEMU's software
    /// CPU: root disk, a 1 GiB copy of the work seed holding our key, a NIC.
    fn boot(image_dir: &Path) -> Guest {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = d.join("key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(status.success());
        let root = d.join("root.ext4");
        let status = Command::new("cp")
            .arg("--sparse=always")
            .arg(image_dir.join(image::ROOTFS))
            .arg(&root)
            .status()
            .unwrap();
        assert!(status.success());
        let work = d.join("work.ext4");
        fs::copy(image_dir.join(image::WORK_SEED), &work).unwrap();
        let script = format!(
            "rm /.ssh/authorized_keys\nwrite {} /.ssh/authorized_keys\nset_inode_field /.ssh/authorized_keys mode 0100600\n",
            key.with_extension("pub").display()
        );
        fs::write(d.join("debugfs.cmds"), script).unwrap();
        let out = Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(d.join("debugfs.cmds"))
            .arg(&work)
            .output()
            .unwrap();
        assert!(out.status.success());
        fs::File::options()
            .write(true)
            .open(&work)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();

        let ssh_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap();
        let mhz: f64 = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("cpu MHz")?
                    .split(':')
                    .nth(1)?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(2000.0);
        let cmdline = format!(
            "console=ttyS0 reboot=k panic=1 tsc_early_khz={} \
             ip=10.0.2.15::10.0.2.2:255.255.255.0:imagetest:eth0:off:10.0.2.3",
            (mhz * 1000.0) as u64
        );
        let drive =
            |id: &str, path: &Path| format!("id={id},file={},format=raw,if=none", path.display());
        let qemu = Command::new("qemu-system-x86_64")
            .args([
                "-M",
                "microvm,acpi=on,pit=on,pic=on,rtc=on",
                "-accel",
                "tcg",
                "-cpu",
                "max",
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-nographic",
                "-no-reboot",
                "-m",
                "1024",
                "-smp",
                "2",
            ])
            .arg("-kernel")
            .arg(image_dir.join(image::VMLINUX))
            .arg("-initrd")
            .arg(image_dir.join(image::INITRD))
            .args(["-append", &cmdline])
            .arg("-chardev")
            .arg(format!(
                "file,id=console,path={}",
                d.join("console.log").display()
            ))
            .args(["-serial", "chardev:console", "-device", "i8042"])
            .args([
                "-drive",
                &drive("root", &root),
                "-device",
                "virtio-blk-device,drive=root",
            ])
            .args([
                "-drive",
                &drive("work", &work),
                "-device",
                "virtio-blk-device,drive=work",
            ])
            .arg("-netdev")
            .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))
            .args(["-device", "virtio-net-device,netdev=n0"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                d.join("qmp.sock").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Guest {
            qemu,
            ssh_port,
            key,
            dir,
        }
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
            .arg("-p")
            .arg(self.ssh_port.to_string())
            .arg("root@127.0.0.1")
            .arg(command)
            .output()
            .unwrap()
    }

    /// Presses Ctrl-Alt-Del on the guest's i8042, as Firecracker's `SendCtrlAltDel` does.
    fn send_ctrl_alt_del(&self) {
        use std::io::{BufRead, BufReader, Write};
        let stream =
            std::os::unix::net::UnixStream::connect(self.dir.path().join("qmp.sock")).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).unwrap(); // greeting
        let keys = r#"{"execute":"send-key","arguments":{"keys":[{"type":"qcode","data":"ctrl"},{"type":"qcode","data":"alt"},{"type":"qcode","data":"delete"}]}}"#;
        for command in [r#"{"execute":"qmp_capabilities"}"#, keys] {
            writeln!(writer, "{command}").unwrap();
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("\"return\""), "QMP {command}: {line}");
        }
    }

    fn console(&self) -> String {
        fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

#[test]
fn image_boots_to_ssh_with_network_work_disk_and_clean_poweroff() {
    if skip_unless_root("image_boots_to_ssh_with_network_work_disk_and_clean_poweroff") {
        return;
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: qemu-system-x86_64 is not installed");
        return;
    }
    let (dir, _) = built_image();
    let mut guest = Guest::boot(&dir);
    let started = std::time::Instant::now();
    while !guest.ssh("true").status.success() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(240),
            "no SSH within 240 s; console:\n{}",
            guest.console()
        );
        assert!(
            guest.qemu.try_wait().unwrap().is_none(),
            "QEMU exited:\n{}",
            guest.console()
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
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
    assert_eq!(lines[1], "10.0.2.15/24", "{text}");
    assert!(
        lines[2].starts_with("default via 10.0.2.2 dev eth0"),
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
    guest.send_ctrl_alt_del();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while guest.qemu.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no poweroff:\n{}",
            guest.console()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        guest.console().contains("reboot: Power down"),
        "{}",
        guest.console()
    );
}
