//! The real Firecracker binary driven through `host::firecracker` and
//! `host::procs`: spawn, configure, start, API errors, stop fallbacks, and
//! finding (or not finding) the VMM after kill -9.
//!
//! Needs root and `/dev/kvm` (skipped otherwise) and the fixtures from
//! `scripts/test-deps.sh` in `target/test-deps` (or `$BANGER_TEST_DEPS`).
//! Guests never get to run here: tests stop their VMs at once.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use banger::host::firecracker::api::{self, ApiClient, ApiError, VmmConfig};
use banger::host::firecracker::process::{self, FcError, StopOutcome};
use banger::host::procs;
use banger_testkit::netns::in_new_netns;
use banger_testkit::{Need, make_ext4, require};
use nix::sys::signal::Signal;
use serde_json::json;

const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The fixtures, or `None` (after saying why) where this host cannot run
/// Firecracker. Missing fixtures are a failure: run scripts/test-deps.sh.
#[track_caller]
fn fixtures() -> Option<(PathBuf, PathBuf)> {
    if require("firecracker", &[Need::Root, Need::Kvm]).is_some() {
        return None;
    }
    let bin = process::find_binary(Some(&banger_testkit::firecracker()))
        .unwrap_or_else(|e| panic!("{e} (run scripts/test-deps.sh or set BANGER_TEST_DEPS)"));
    let kernel = banger_testkit::vmlinux();
    assert!(
        kernel.is_file(),
        "{} is missing: run scripts/test-deps.sh",
        kernel.display()
    );
    Some((bin, kernel))
}

/// A spawned VMM, killed and reaped on drop even if the test fails.
struct Vmm {
    pid: u32,
    sock: PathBuf,
}

impl Vmm {
    fn spawn(bin: &Path, dir: &Path, id: &str) -> Self {
        let sock = dir.join("api.sock");
        let pid = process::spawn(bin, &sock, id, &dir.join("console.log")).unwrap();
        let vmm = Self { pid, sock };
        process::wait_for_socket(&vmm.sock, vmm.pid, SOCKET_TIMEOUT).unwrap();
        vmm
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.sock)
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = procs::signal(self.pid, Signal::SIGKILL);
        procs::wait_exit(self.pid, Duration::from_secs(5));
    }
}

fn state(client: &ApiClient) -> String {
    client.get("/").unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn vm_starts_runs_rejects_bad_requests_and_stops_by_signal() {
    let Some((bin, kernel)) = fixtures() else {
        return;
    };
    let exes = [procs::file_id(&bin).unwrap()];
    let who = procs::VmmIdentity::ours(&exes);
    in_new_netns(|| {
        let status = Command::new("ip")
            .args(["tuntap", "add", "bgtest0", "mode", "tap"])
            .status()
            .unwrap();
        assert!(status.success(), "ip tuntap add failed");

        let dir = tempfile::tempdir().unwrap();
        let cfg = VmmConfig {
            vcpus: 1,
            memory_mib: 128,
            kernel,
            initrd: None,
            boot_args: "console=ttyS0 reboot=k panic=1".to_owned(),
            rootfs: dir.path().join("rootfs.ext4"),
            root_read_only: true,
            work_disk: dir.path().join("work.ext4"),
            seed: Some(dir.path().join("seed.cpio")),
            upper: Some(dir.path().join("upper.ext4")),
            tap: "bgtest0".to_owned(),
            mac: "06:00:0a:00:00:02".to_owned(),
            vsock_cid: 3,
            vsock_uds: dir.path().join("vsock.sock"),
            log_path: dir.path().join("firecracker.log"),
            metrics_path: dir.path().join("metrics.json"),
        };
        make_ext4(&cfg.rootfs, 16);
        make_ext4(&cfg.work_disk, 16);
        std::fs::write(dir.path().join("seed.cpio"), [0u8; 512]).unwrap();
        make_ext4(&dir.path().join("upper.ext4"), 16);

        let vmm = Vmm::spawn(&bin, dir.path(), "fc-start");
        let client = vmm.client();
        assert_eq!(state(&client), "Not started");
        api::configure_and_start(&client, &cfg).unwrap();
        let info = client.get("/").unwrap();
        assert_eq!(info["state"], "Running", "{info}");
        assert_eq!(info["id"], "fc-start", "{info}");
        assert!(
            cfg.vsock_uds.exists(),
            "Firecracker opened the vsock socket"
        );
        let log = std::fs::read_to_string(&cfg.log_path).unwrap();
        assert!(log.contains("InstanceStart"), "{log}");

        let (path, drive) = api::requests(&cfg)
            .into_iter()
            .find(|(path, _)| path == "/drives/rootfs")
            .unwrap();
        let error = client.put(&path, &drive).unwrap_err();
        match &error {
            ApiError::BadRequest { fault_message, .. } => assert_eq!(
                fault_message,
                "The requested operation is not supported after starting the microVM."
            ),
            other => panic!("expected a rejected request, got {other:?}"),
        }

        assert_eq!(procs::vmm_pid(Some(vmm.pid), &vmm.sock, who), Some(vmm.pid));
        assert_eq!(
            procs::vmm_pid(Some(std::process::id()), &vmm.sock, who),
            Some(vmm.pid)
        );

        // The guest cannot answer Ctrl-Alt-Del within a zero timeout.
        let outcome = process::stop_vmm(&client, vmm.pid, Duration::ZERO, false).unwrap();
        assert_eq!(outcome, StopOutcome::Term);
        assert!(!procs::is_alive(vmm.pid));
        assert_eq!(procs::vmm_pid(Some(vmm.pid), &vmm.sock, who), None);
    });
}

#[test]
fn vmm_killed_with_sigkill_is_gone_for_reconcile() {
    let Some((bin, _)) = fixtures() else {
        return;
    };
    let exes = [procs::file_id(&bin).unwrap()];
    let who = procs::VmmIdentity::ours(&exes);
    let (major, minor, _) = process::version(&bin).unwrap();
    assert!(
        (major, minor) >= (1, 10),
        "fixture is Firecracker {major}.{minor}"
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api.sock"), "left over").unwrap();
    let vmm = Vmm::spawn(&bin, dir.path(), "fc-kill");
    let client = vmm.client();
    assert_eq!(state(&client), "Not started");

    let error = client
        .put(
            "/machine-config",
            &json!({ "vcpu_count": 0, "mem_size_mib": 128 }),
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "Firecracker rejected PUT /machine-config: Machine config error: The number of vCPUs \
         must be greater than 0, less than 32 and must be 1 or an even number if SMT is enabled."
    );

    assert_eq!(procs::vmm_pid(None, &vmm.sock, who), Some(vmm.pid));
    let mine = |found: Vec<(u32, PathBuf)>| -> Vec<(u32, PathBuf)> {
        found.into_iter().filter(|(_, s)| *s == vmm.sock).collect()
    };
    assert_eq!(
        mine(procs::vmms_under(dir.path().parent().unwrap(), who)),
        vec![(vmm.pid, vmm.sock.clone())]
    );
    // A connection the VMM has accepted carries the socket's path as well;
    // with one held open the VMM is still listed once, and still found.
    let mut held = std::os::unix::net::UnixStream::connect(&vmm.sock).unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut reply = [0u8; 12];
    held.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 200");
    assert_eq!(
        mine(procs::vmms_under(dir.path().parent().unwrap(), who)),
        vec![(vmm.pid, vmm.sock.clone())]
    );
    assert_eq!(procs::vmm_pid(None, &vmm.sock, who), Some(vmm.pid));
    drop(held);

    Command::new("kill")
        .args(["-9", &vmm.pid.to_string()])
        .status()
        .unwrap();
    assert!(procs::wait_exit(vmm.pid, Duration::from_secs(5)));
    assert_eq!(procs::vmm_pid(Some(vmm.pid), &vmm.sock, who), None);
    assert_eq!(procs::vmm_pid(None, &vmm.sock, who), None);
    assert!(mine(procs::vmms_under(dir.path().parent().unwrap(), who)).is_empty());
    assert_eq!(
        process::stop_vmm(&client, vmm.pid, Duration::from_secs(1), false).unwrap(),
        StopOutcome::AlreadyGone
    );

    let console = std::fs::read_to_string(dir.path().join("console.log")).unwrap();
    assert!(console.contains("Running Firecracker"), "{console}");
}

#[test]
fn forced_stop_kills_at_once() {
    let Some((bin, _)) = fixtures() else {
        return;
    };
    let exes = [procs::file_id(&bin).unwrap()];
    let who = procs::VmmIdentity::ours(&exes);
    let dir = tempfile::tempdir().unwrap();
    let vmm = Vmm::spawn(&bin, dir.path(), "fc-force");
    let outcome = process::stop_vmm(&vmm.client(), vmm.pid, Duration::from_secs(30), true).unwrap();
    assert_eq!(outcome, StopOutcome::Kill);
    assert_eq!(procs::vmm_pid(Some(vmm.pid), &vmm.sock, who), None);
}

#[test]
fn vmm_that_dies_before_its_socket_is_reported_at_once() {
    let Some((bin, _)) = fixtures() else {
        return;
    };

    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let console_log = dir.path().join("console.log");
    // Firecracker refuses an id with a space and exits.
    let pid = process::spawn(&bin, &sock, "bad id", &console_log).unwrap();
    let error = process::wait_for_socket(&sock, pid, Duration::from_secs(30)).unwrap_err();
    assert!(
        matches!(&error, FcError::Exited { pid: exited, .. } if *exited == pid),
        "{error:?}"
    );
    let console = std::fs::read_to_string(&console_log).unwrap();
    assert!(console.contains("Invalid instance ID"), "{console}");
}
