//! Real guests under QEMU: the kernel from scripts/test-deps.sh with a busybox
//! initramfs. Part of the root-only guest tier; skips with a message when not
//! root or when the fixtures are missing.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Shim, eventually, pid_alive, skip_unless_root_with};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn vmlinux() -> PathBuf {
    common::deps().join("vmlinux")
}

/// A shim configured with the test kernel, an initramfs running `init`, and a vsock.
fn configured_shim(init: &str) -> Option<Shim> {
    configured_shim_with(init, &[])
}

/// Like [`configured_shim`], with `extra` files in the initramfs.
fn configured_shim_with(init: &str, extra: &[(String, Vec<u8>)]) -> Option<Shim> {
    let backend = common::deps().join("bin/vhost-device-vsock");
    if skip_unless_root_with(&[&vmlinux(), &backend, "/bin/busybox".as_ref()]) {
        return None;
    }
    let shim = Shim::start();
    let initrd = shim.dir.path().join("initrd.cpio");
    common::write_initramfs(&initrd, init, extra);
    shim.put_ok("/machine-config", r#"{"vcpu_count":1,"mem_size_mib":256}"#);
    shim.put_ok(
        "/boot-source",
        &format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1","initrd_path":"{}"}}"#,
            vmlinux().display(),
            initrd.display()
        ),
    );
    let uds = shim.dir.path().join("v.sock");
    shim.put_ok(
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, uds.display()),
    );
    Some(shim)
}

/// An init that says it is up (the marker is computed, so it only appears
/// when the guest runs it) and then waits.
const WAITING_INIT: &str = "#!/bin/busybox sh\n/bin/busybox echo guest-up-$((6 * 7))\nwhile :; do /bin/busybox sleep 1; done\n";

#[test]
fn guest_prints_to_the_console_and_its_reboot_ends_the_shim() {
    let init = "#!/bin/busybox sh\n/bin/busybox echo guest-up-$((6 * 7))\n/bin/busybox reboot -f\n";
    let Some(mut shim) = configured_shim(init) else {
        return;
    };
    shim.put_ok("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(shim.state(), "Running");
    assert!(
        shim.dir.path().join("v.sock").exists(),
        "vsock socket is served while the guest runs"
    );

    let status = shim.wait_exit(BOOT_TIMEOUT);
    let console = shim.console_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "shim exit; stderr:\n{}\nconsole:\n{console}",
        shim.stderr_text()
    );
    assert!(
        console.contains("guest-up-42"),
        "marker missing from console:\n{console}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(shim.dir.path())
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("sock"))
        .collect();
    assert!(leftovers.is_empty(), "sockets left behind: {leftovers:?}");
}

#[test]
fn ctrl_alt_del_reboots_the_guest_and_ends_the_shim() {
    let Some(mut shim) = configured_shim(WAITING_INIT) else {
        return;
    };
    shim.put_ok("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert!(
        eventually(BOOT_TIMEOUT, || shim.console_text().contains("guest-up-42")),
        "guest never came up:\n{}",
        shim.console_text()
    );
    shim.put_ok("/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    let status = shim.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "stderr:\n{}",
        shim.stderr_text()
    );
    assert!(
        shim.console_text().contains("reboot"),
        "no reboot on the console"
    );
}

/// QEMU and the backend, started by a running shim.
fn started_children(shim: &Shim) -> Vec<(i32, String)> {
    shim.put_ok("/actions", r#"{"action_type":"InstanceStart"}"#);
    let mut children = shim.children();
    children.sort_by(|a, b| a.1.cmp(&b.1));
    let names: Vec<&str> = children.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(
        names,
        ["qemu-system-x86", "vhost-device-vs"],
        "children by comm (15 chars)"
    );
    children
}

#[test]
fn sigkill_of_the_shim_takes_qemu_and_the_backend_down() {
    let Some(mut shim) = configured_shim(WAITING_INIT) else {
        return;
    };
    let children = started_children(&shim);
    shim.signal(libc::SIGKILL);
    let _ = shim.child.wait();
    for (pid, name) in children {
        assert!(
            eventually(Duration::from_secs(10), || !pid_alive(pid)),
            "{name} ({pid}) outlived the shim"
        );
    }
}

#[test]
fn sigterm_while_running_stops_the_guest_and_cleans_up() {
    let Some(mut shim) = configured_shim(WAITING_INIT) else {
        return;
    };
    let children = started_children(&shim);
    shim.signal(libc::SIGTERM);
    let status = shim
        .wait_exit(Duration::from_secs(30))
        .expect("shim exits on SIGTERM");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    for (pid, name) in children {
        assert!(!pid_alive(pid), "{name} ({pid}) outlived the shim");
    }
    assert!(!shim.api_sock.exists());
    assert!(!shim.dir.path().join("v.sock").exists());
}

/// The guest modules for virtio block, net and vsock devices, in load order
/// (the Debian cloud kernel builds them all as modules).
const GUEST_MODULES: [&str; 10] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_mmio.ko",
    "drivers/block/virtio_blk.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
    "net/vmw_vsock/vsock.ko",
    "net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
    "net/vmw_vsock/vmw_vsock_virtio_transport.ko",
];

/// The [`GUEST_MODULES`] matching the test kernel as (file name, contents),
/// fetched once with `apt-get download` of its Debian package into the
/// fixtures cache. `None` (after saying why) when they cannot be had.
fn guest_modules() -> Option<Vec<(String, Vec<u8>)>> {
    let kernel = std::fs::read(vmlinux()).ok()?;
    let marker = b"Linux version ";
    let start = kernel.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let release: String = kernel[start..]
        .iter()
        .take_while(|b| !b.is_ascii_whitespace())
        .map(|&b| char::from(b))
        .collect();
    let cache = common::deps()
        .join("cache")
        .join(format!("guest-modules-{release}"));
    if !cache.join("done").exists() {
        let work = tempfile::tempdir().ok()?;
        let package = format!("linux-image-{release}");
        let fetched = Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(work.path())
            .output()
            .is_ok_and(|out| out.status.success());
        let deb = std::fs::read_dir(work.path())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"));
        let Some(deb) = deb.filter(|_| fetched) else {
            eprintln!("skipping guest module test: cannot apt-get download {package}");
            return None;
        };
        let unpacked = work.path().join("x");
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(&unpacked)
            .status()
            .ok()?;
        if !status.success() {
            eprintln!(
                "skipping guest module test: cannot unpack {}",
                deb.display()
            );
            return None;
        }
        std::fs::create_dir_all(&cache).ok()?;
        let modules = unpacked.join("lib/modules").join(&release).join("kernel");
        for module in GUEST_MODULES {
            let name = Path::new(module).file_name()?;
            std::fs::copy(modules.join(module), cache.join(name)).ok()?;
        }
        std::fs::write(cache.join("done"), b"").ok()?;
    }
    GUEST_MODULES
        .iter()
        .map(|module| {
            let name = Path::new(module)
                .file_name()?
                .to_string_lossy()
                .into_owned();
            let data = std::fs::read(cache.join(&name)).ok()?;
            Some((name, data))
        })
        .collect()
}

/// An init prologue: /dev and /sys mounted (the shell needs /dev/null for
/// background jobs) and every module in `modules` loaded.
fn init_loading(modules: &[(String, Vec<u8>)]) -> String {
    let mut init = String::from(
        "#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\n\
         /bin/busybox mkdir -p /sys\n/bin/busybox mount -t sysfs sys /sys\n",
    );
    for (name, _) in modules {
        init.push_str(&format!("/bin/busybox insmod /{name}\n"));
    }
    init
}

/// A static guest program that listens on vsock port 52 and echoes one connection.
const VSOCK_ECHO_C: &str = r#"
#include <sys/socket.h>
#include <linux/vm_sockets.h>
#include <unistd.h>
int main(void) {
    struct sockaddr_vm addr = { .svm_family = AF_VSOCK, .svm_port = 52, .svm_cid = VMADDR_CID_ANY };
    int s = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof addr) || listen(s, 1)) return 1;
    write(1, "vsock-echo-listening\n", 21);
    int c = accept(s, 0, 0);
    char buf[256];
    ssize_t n;
    while ((n = read(c, buf, sizeof buf)) > 0) write(c, buf, n);
    return 0;
}
"#;

fn build_vsock_echo(dir: &Path) -> Option<Vec<u8>> {
    let source = dir.join("vsock-echo.c");
    let binary = dir.join("vsock-echo");
    std::fs::write(&source, VSOCK_ECHO_C).ok()?;
    let built = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status();
    if !built.is_ok_and(|status| status.success()) {
        eprintln!("skipping vsock test: cannot build a static guest program with cc");
        return None;
    }
    std::fs::read(binary).ok()
}

#[test]
fn host_connects_to_a_guest_vsock_port_through_the_uds() {
    let backend = common::deps().join("bin/vhost-device-vsock");
    if skip_unless_root_with(&[&vmlinux(), &backend, "/bin/busybox".as_ref()]) {
        return;
    }
    let Some(modules) = guest_modules() else {
        return;
    };
    let build_dir = tempfile::tempdir().expect("temp dir");
    let Some(echo) = build_vsock_echo(build_dir.path()) else {
        return;
    };
    let mut init = init_loading(&modules);
    init.push_str("/vsock-echo &\nwhile :; do /bin/busybox sleep 1; done\n");
    let mut extra = modules;
    extra.push(("vsock-echo".to_owned(), echo));
    let Some(mut shim) = configured_shim_with(&init, &extra) else {
        return;
    };

    shim.put_ok("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert!(
        eventually(BOOT_TIMEOUT, || shim
            .console_text()
            .contains("vsock-echo-listening")),
        "guest listener never came up:\n{}",
        shim.console_text()
    );
    let stream = UnixStream::connect(shim.dir.path().join("v.sock")).expect("connect vsock uds");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    writer.write_all(b"CONNECT 52\n").expect("CONNECT");
    let mut line = String::new();
    reader.read_line(&mut line).expect("CONNECT reply");
    assert!(
        line.starts_with("OK ") && line.ends_with('\n'),
        "CONNECT reply {line:?}"
    );
    writer.write_all(b"ping over vsock\n").expect("send");
    line.clear();
    reader.read_line(&mut line).expect("echo");
    assert_eq!(line, "ping over vsock\n");

    shim.put_ok("/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    let status = shim.wait_exit(Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "stderr:\n{}",
        shim.stderr_text()
    );
}

/// Runs `test` on a thread inside a fresh network namespace (which goes away
/// with the thread), propagating its panic.
fn in_private_netns(test: impl FnOnce() + Send + 'static) {
    let outcome = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespace membership.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        test();
    })
    .join();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn run(argv: &[&str]) {
    let status = Command::new(argv[0])
        .args(&argv[1..])
        .status()
        .expect(argv[0]);
    assert!(status.success(), "{argv:?}");
}

#[test]
fn guest_sees_root_and_work_drives_and_reaches_the_host_over_its_tap() {
    if skip_unless_root_with(&[
        &vmlinux(),
        &common::deps().join("bin/vhost-device-vsock"),
        "/bin/busybox".as_ref(),
    ]) {
        return;
    }
    let Some(modules) = guest_modules() else {
        return;
    };
    in_private_netns(move || {
        run(&["ip", "link", "set", "lo", "up"]);
        run(&["ip", "tuntap", "add", "dev", "shimtap0", "mode", "tap"]);
        run(&["ip", "addr", "add", "10.77.0.1/24", "dev", "shimtap0"]);
        run(&["ip", "link", "set", "shimtap0", "up"]);

        let mut init = init_loading(&modules);
        init.push_str(
            "bb=/bin/busybox\n\
             $bb echo \"root reads: $($bb head -c 11 /dev/vda)\"\n\
             echo x | $bb dd of=/dev/vda 2>/dev/null || $bb echo root-refuses-writes\n\
             echo work-written | $bb dd of=/dev/vdb conv=fsync 2>/dev/null\n\
             $bb echo \"mac: $($bb cat /sys/class/net/eth0/address)\"\n\
             $bb ip addr add 10.77.0.2/24 dev eth0\n\
             $bb ip link set eth0 up\n\
             $bb ping -c 1 -W 20 10.77.0.1 >/dev/null && $bb echo host-answers-ping\n\
             $bb reboot -f\n",
        );
        let Some(mut shim) = configured_shim_with(&init, &modules) else {
            return;
        };
        let root = shim.dir.path().join("root.img");
        let work = shim.dir.path().join("work.img");
        let mut root_bytes = b"root-marker".to_vec();
        root_bytes.resize(1 << 20, 0);
        std::fs::write(&root, root_bytes).expect("root image");
        std::fs::write(&work, vec![0; 1 << 20]).expect("work image");
        shim.put_ok(
            "/drives/rootfs",
            &format!(
                r#"{{"drive_id":"rootfs","path_on_host":"{}","is_root_device":true,"is_read_only":true}}"#,
                root.display()
            ),
        );
        shim.put_ok(
            "/drives/work",
            &format!(
                r#"{{"drive_id":"work","path_on_host":"{}","is_root_device":false,"is_read_only":false}}"#,
                work.display()
            ),
        );
        shim.put_ok(
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"shimtap0","guest_mac":"06:00:0a:4d:00:02"}"#,
        );
        shim.put_ok("/actions", r#"{"action_type":"InstanceStart"}"#);

        let status = shim.wait_exit(BOOT_TIMEOUT);
        let console = shim.console_text();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "stderr:\n{}\nconsole:\n{console}",
            shim.stderr_text()
        );
        for expected in [
            "root reads: root-marker",
            "root-refuses-writes",
            "mac: 06:00:0a:4d:00:02",
            "host-answers-ping",
        ] {
            assert!(
                console.contains(expected),
                "{expected:?} missing from console:\n{console}"
            );
        }
        let written = std::fs::read(&work).expect("work image");
        assert!(
            written.starts_with(b"work-written\n"),
            "the guest's write did not reach the work disk"
        );
    });
}
