//! Real guests under QEMU: the kernel from scripts/test-deps.sh (or, where
//! modules are needed, the test image's kernel and modules) with a busybox
//! initramfs. Part of the root-only guest tier; skips with a message when not
//! root or when the fixtures are missing.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use banger_testkit::image::{GuestImage, guest_image, write_initramfs};
use banger_testkit::netns::in_new_netns;
use banger_testkit::shim::Shim;
use banger_testkit::{Need, eventually, pid_alive, require, run, vmlinux};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// A shim configured with the fixture kernel, an initramfs running `init`, and a vsock.
#[track_caller]
fn configured_shim(init: &str) -> Option<Shim> {
    fixtures_present()?;
    Some(configured_shim_with(&vmlinux(), init, &[]))
}

/// `None` (after saying why) unless root with the kernel, the vsock backend and busybox.
#[track_caller]
fn fixtures_present() -> Option<()> {
    let (kernel, backend) = (vmlinux(), banger_testkit::vhost_device_vsock());
    let needs = [
        Need::Root,
        Need::File(&kernel),
        Need::File(&backend),
        Need::File(Path::new("/bin/busybox")),
    ];
    require("guest", &needs).is_none().then_some(())
}

/// A shim configured with `kernel`, an initramfs running `init` with `extra`
/// files at its top, and a vsock.
fn configured_shim_with(kernel: &Path, init: &str, extra: &[(String, Vec<u8>)]) -> Shim {
    let shim = Shim::start();
    let initrd = shim.dir.path().join("initrd.cpio");
    write_initramfs(&initrd, init, extra);
    shim.put_ok("/machine-config", r#"{"vcpu_count":1,"mem_size_mib":256}"#);
    shim.put_ok(
        "/boot-source",
        &format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1","initrd_path":"{}"}}"#,
            kernel.display(),
            initrd.display()
        ),
    );
    let uds = shim.dir.path().join("v.sock");
    shim.put_ok(
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, uds.display()),
    );
    shim
}

/// The test image, whose kernel comes with the virtio and vsock modules its
/// initramfs loads; `None` (after saying why) when it cannot be had.
#[track_caller]
fn image_with_modules() -> Option<&'static GuestImage> {
    fixtures_present()?;
    guest_image("guest")
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
    shim.instance_start();
    assert_eq!(shim.state(), "Running");
    assert!(
        shim.dir.path().join("v.sock").exists(),
        "vsock socket is served while the guest runs"
    );

    shim.assert_exits_cleanly(BOOT_TIMEOUT);
    let console = shim.console_text();
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
    shim.instance_start();
    assert!(
        eventually(BOOT_TIMEOUT, || shim.console_text().contains("guest-up-42")),
        "guest never came up:\n{}",
        shim.console_text()
    );
    shim.ctrl_alt_del();
    shim.assert_exits_cleanly(Duration::from_secs(60));
    assert!(
        shim.console_text().contains("reboot"),
        "no reboot on the console"
    );
}

/// QEMU and the backend, started by a running shim.
fn started_children(shim: &Shim) -> Vec<(i32, String)> {
    shim.instance_start();
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

#[track_caller]
fn build_vsock_echo(dir: &Path) -> Option<Vec<u8>> {
    let source = dir.join("vsock-echo.c");
    let binary = dir.join("vsock-echo");
    std::fs::write(&source, VSOCK_ECHO_C).ok()?;
    let built = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status();
    let built = built.is_ok_and(|status| status.success());
    let why = "cannot build a static guest program with cc";
    if require("guest", &[Need::That(built, why)]).is_some() {
        return None;
    }
    Some(std::fs::read(binary).expect("the built guest program"))
}

#[test]
fn host_connects_to_a_guest_vsock_port_through_the_uds() {
    let Some(image) = image_with_modules() else {
        return;
    };
    let modules = image.modules();
    let build_dir = tempfile::tempdir().expect("temp dir");
    let Some(echo) = build_vsock_echo(build_dir.path()) else {
        return;
    };
    let mut init = init_loading(&modules);
    init.push_str("/vsock-echo &\nwhile :; do /bin/busybox sleep 1; done\n");
    let mut extra = modules;
    extra.push(("vsock-echo".to_owned(), echo));
    let mut shim = configured_shim_with(&image.vmlinux(), &init, &extra);

    shim.instance_start();
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

    shim.ctrl_alt_del();
    shim.assert_exits_cleanly(Duration::from_secs(60));
}

#[test]
fn guest_sees_root_and_work_drives_and_reaches_the_host_over_its_tap() {
    let Some(image) = image_with_modules() else {
        return;
    };
    let modules = image.modules();
    in_new_netns(move || {
        run("ip", &["tuntap", "add", "dev", "shimtap0", "mode", "tap"]);
        run("ip", &["addr", "add", "10.77.0.1/24", "dev", "shimtap0"]);
        run("ip", &["link", "set", "shimtap0", "up"]);

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
        let mut shim = configured_shim_with(&image.vmlinux(), &init, &modules);
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
        shim.instance_start();

        shim.assert_exits_cleanly(BOOT_TIMEOUT);
        let console = shim.console_text();
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
