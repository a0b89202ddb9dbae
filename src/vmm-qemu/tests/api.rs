//! The API as a Firecracker client sees it, without booting a guest.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use banger_testkit::api::fault;
use banger_testkit::shim::Shim;

#[test]
fn reports_identity_and_state_before_start() {
    let shim = Shim::start();
    let (status, body) = shim.request("GET", "/", "");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        info,
        serde_json::json!({"id": "shim-test", "state": "Not started", "vmm_version": "1.12.1", "app_name": "banger-vmm-qemu"})
    );
}

#[test]
fn accepts_a_full_pre_boot_configuration() {
    let shim = Shim::start();
    let dir = shim.dir.path();
    for name in ["fc.log", "metrics.json", "root.ext4", "work.ext4"] {
        std::fs::write(dir.join(name), b"").expect("fixture");
    }
    let kernel = banger_testkit::vmlinux();
    let kernel = if kernel.exists() {
        kernel
    } else {
        dir.join("root.ext4")
    };
    let p = |name: &str| dir.join(name).display().to_string();
    shim.put_ok(
        "/logger",
        &format!(
            r#"{{"log_path":"{}","level":"Info","show_level":true,"show_log_origin":true}}"#,
            p("fc.log")
        ),
    );
    shim.put_ok(
        "/metrics",
        &format!(r#"{{"metrics_path":"{}"}}"#, p("metrics.json")),
    );
    shim.put_ok(
        "/machine-config",
        r#"{"vcpu_count":2,"mem_size_mib":256,"smt":false}"#,
    );
    shim.put_ok(
        "/boot-source",
        &format!(
            r#"{{"kernel_image_path":"{}","boot_args":"console=ttyS0 reboot=k panic=1"}}"#,
            kernel.display()
        ),
    );
    shim.put_ok(
        "/drives/rootfs",
        &format!(
            r#"{{"drive_id":"rootfs","path_on_host":"{}","is_root_device":true,"is_read_only":false}}"#,
            p("root.ext4")
        ),
    );
    shim.put_ok(
        "/drives/work",
        &format!(
            r#"{{"drive_id":"work","path_on_host":"{}","is_root_device":false,"is_read_only":false}}"#,
            p("work.ext4")
        ),
    );
    shim.put_ok(
        "/network-interfaces/eth0",
        r#"{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:0a:00:00:02"}"#,
    );
    shim.put_ok(
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, p("v.sock")),
    );
    assert_eq!(shim.state(), "Not started");
}

#[test]
fn refuses_unknown_paths_and_methods() {
    let shim = Shim::start();
    let (status, body) = shim.put("/foo", "{}");
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "Invalid request method and/or path: PUT foo.".to_owned()
        )
    );
    let (status, body) = shim.request("GET", "/machine-config/x", "");
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "Invalid request method and/or path: GET machine-config/x.".to_owned()
        )
    );
    let (status, body) = shim.request("PATCH", "/vm", r#"{"state":"Paused"}"#);
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "Invalid request method and/or path: PATCH vm.".to_owned()
        )
    );
}

#[test]
fn explains_bad_bodies_like_firecracker() {
    let shim = Shim::start();
    let cases = [
        (
            "/machine-config",
            "notjson",
            "expected ident at line 1 column 2",
        ),
        (
            "/machine-config",
            r#"{"vcpu_count":1}"#,
            "missing field `mem_size_mib` at line 1 column 16",
        ),
        (
            "/machine-config",
            r#"{"vcpu_count":1,"mem_size_mib":128,"bogus":1}"#,
            "unknown field `bogus`, expected one of `vcpu_count`, `mem_size_mib`, `smt` at line 1 column 42",
        ),
        (
            "/actions",
            r#"{"action_type":"Nope"}"#,
            "unknown variant `Nope`, expected `InstanceStart` or `SendCtrlAltDel` at line 1 column 21",
        ),
    ];
    for (path, body, detail) in cases {
        let (status, reply) = shim.put(path, body);
        assert_eq!(status, 400, "{path} {body}");
        assert_eq!(
            fault(&reply),
            format!("An error occurred when deserializing the json body of a request: {detail}.")
        );
    }
}

#[test]
fn checks_files_and_ids_when_configured() {
    let shim = Shim::start();
    let (status, body) = shim.put(
        "/boot-source",
        r#"{"kernel_image_path":"/nonexistent","boot_args":"x"}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(
        fault(&body),
        "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)"
    );

    let (status, body) = shim.put(
        "/drives/rootfs",
        r#"{"drive_id":"rootfs","path_on_host":"/nonexistent","is_root_device":true,"is_read_only":false}"#,
    );
    assert_eq!(status, 400);
    assert_eq!(
        fault(&body),
        "Drive config error: Unable to create the virtio block device: Virtio backend error: \
         Error manipulating the backing file: No such file or directory (os error 2) /nonexistent"
    );

    let (status, body) = shim.put(
        "/drives/rootfs",
        r#"{"drive_id":"other","path_on_host":"/etc/hostname","is_root_device":true,"is_read_only":true}"#,
    );
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "The id from the path does not match the id from the body!".to_owned()
        )
    );

    let (status, body) = shim.put("/logger", r#"{"log_path":"/nonexistent/fc.log"}"#);
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "Logger error: Failed to open target file: No such file or directory (os error 2)"
                .to_owned()
        )
    );
}

#[test]
fn actions_need_a_kernel_and_a_running_guest() {
    let shim = Shim::start();
    let (status, body) = shim.put("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "Start microvm error: Cannot start microvm without kernel configuration.".to_owned()
        )
    );
    let (status, body) = shim.put("/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    assert_eq!(
        (status, fault(&body)),
        (
            400,
            "The requested operation is not supported before starting the microVM.".to_owned()
        )
    );
    assert_eq!(shim.state(), "Not started");
}

#[test]
fn a_start_that_cannot_run_its_backend_fails_and_stays_not_started() {
    let empty = tempfile::tempdir().expect("temp dir");
    let shim = Shim::start_with_path(&empty.path().display().to_string());
    let kernel = shim.dir.path().join("vmlinux");
    std::fs::write(&kernel, b"").expect("kernel");
    shim.put_ok(
        "/boot-source",
        &format!(r#"{{"kernel_image_path":"{}"}}"#, kernel.display()),
    );
    let uds = shim.dir.path().join("v.sock");
    shim.put_ok(
        "/vsock",
        &format!(r#"{{"guest_cid":3,"uds_path":"{}"}}"#, uds.display()),
    );
    let (status, body) = shim.put("/actions", r#"{"action_type":"InstanceStart"}"#);
    assert_eq!(status, 400);
    assert_eq!(
        fault(&body),
        "Start microvm error: cannot run vhost-device-vsock: No such file or directory (os error 2)"
    );
    assert_eq!(shim.state(), "Not started");
    assert!(shim.children().is_empty());
}

#[test]
fn serves_several_requests_on_one_connection() {
    let shim = Shim::start();
    let mut stream = UnixStream::connect(&shim.api_sock).expect("connect");
    let body = r#"{"vcpu_count":1,"mem_size_mib":128}"#;
    let requests = format!(
        "PUT /machine-config HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET / HTTP/1.1\r\n\r\n",
        body.len()
    );
    stream.write_all(requests.as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    assert_eq!(
        read_response(&mut reader),
        ("HTTP/1.1 204 No Content".to_owned(), String::new())
    );
    let (status, json) = read_response(&mut reader);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(json.contains(r#""state":"Not started""#), "{json}");
}

/// Reads one response off a kept-alive connection: (status line, body).
fn read_response(reader: &mut impl BufRead) -> (String, String) {
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        if line == "\r\n" {
            break;
        }
        if let Some(value) = line.strip_prefix("Content-Length: ") {
            length = value.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (
        status.trim_end().to_owned(),
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[test]
fn sigterm_ends_the_shim_and_removes_its_socket() {
    let mut shim = Shim::start();
    shim.signal(libc::SIGTERM);
    let status = shim
        .wait_exit(Duration::from_secs(10))
        .expect("shim exits on SIGTERM");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(!shim.api_sock.exists());
    assert!(
        shim.stderr_text()
            .contains(":banger-vmm-qemu:INFO] signal 15")
    );
}

#[test]
fn prints_its_version_and_the_api_it_serves() {
    let out = Command::new(env!("CARGO_BIN_EXE_banger-vmm-qemu"))
        .arg("--version")
        .output()
        .expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "banger-vmm-qemu 0.1.0 (Firecracker API v1.12.1)\n"
    );
}
