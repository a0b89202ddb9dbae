//! Real guests under QEMU: the kernel from scripts/test-deps.sh with a busybox
//! initramfs. Part of the root-only guest tier; skips with a message when not
//! root or when the fixtures are missing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Shim, eventually, pid_alive, skip_unless_root_with};

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

fn vmlinux() -> PathBuf {
    common::deps().join("vmlinux")
}

/// A shim configured with the test kernel, an initramfs running `init`, and a vsock.
fn configured_shim(init: &str) -> Option<Shim> {
    let backend = common::deps().join("bin/vhost-device-vsock");
    if skip_unless_root_with(&[&vmlinux(), &backend, "/bin/busybox".as_ref()]) {
        return None;
    }
    let shim = Shim::start();
    let initrd = shim.dir.path().join("initrd.cpio");
    common::write_initramfs(&initrd, init);
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
