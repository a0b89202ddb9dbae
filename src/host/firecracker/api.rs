//! Firecracker's API: a client for its Unix socket, and the requests that
//! configure and start a VM.

use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::http::{self, ReadError};
use crate::host::deadline::DeadlineStream;

/// How long one request may take, connect to last body byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed API request. Firecracker's own explanation, its `fault_message`,
/// is carried verbatim.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to the Firecracker API socket {}", sock.display())]
    Connect {
        sock: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{method} {path} on the Firecracker API socket {} timed out after {timeout:?}", sock.display())]
    Timeout {
        sock: PathBuf,
        method: &'static str,
        path: String,
        timeout: Duration,
    },
    #[error("{method} {path} on the Firecracker API socket {} failed", sock.display())]
    Io {
        sock: PathBuf,
        method: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("malformed response to {method} {path} on the Firecracker API socket {}: {reason}", sock.display())]
    Malformed {
        sock: PathBuf,
        method: &'static str,
        path: String,
        reason: String,
    },
    /// HTTP 400: Firecracker refused the request as given.
    #[error("Firecracker rejected {method} {path}: {fault_message}")]
    BadRequest {
        method: &'static str,
        path: String,
        fault_message: String,
    },
    /// Any other non-2xx status.
    #[error("Firecracker failed {method} {path} (HTTP {status}): {fault_message}")]
    Status {
        method: &'static str,
        path: String,
        status: u16,
        fault_message: String,
    },
    #[error("cannot create {} for Firecracker", path.display())]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Talks to one Firecracker process over its API socket, one connection per
/// request, each bounded by [`REQUEST_TIMEOUT`] as a whole (a VMM that drips
/// its reply a byte at a time is cut off all the same).
#[derive(Debug, Clone)]
pub struct ApiClient {
    sock: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    pub fn new(sock: &Path) -> Self {
        Self {
            sock: sock.to_owned(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// A client whose requests each get `timeout` instead.
    pub fn with_timeout(sock: &Path, timeout: Duration) -> Self {
        Self {
            sock: sock.to_owned(),
            timeout,
        }
    }

    pub fn put(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.request("PUT", path, Some(body)).map(drop)
    }

    pub fn patch(&self, path: &str, body: &Value) -> Result<(), ApiError> {
        self.request("PATCH", path, Some(body)).map(drop)
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        let body = self.request("GET", path, None)?;
        serde_json::from_slice(&body).map_err(|e| ApiError::Malformed {
            sock: self.sock.clone(),
            method: "GET",
            path: path.to_owned(),
            reason: format!("body is not JSON: {e}"),
        })
    }

    /// Sends one request and returns the body of a 2xx response.
    fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Vec<u8>, ApiError> {
        let io_error = |source: io::Error| {
            if matches!(
                source.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                ApiError::Timeout {
                    sock: self.sock.clone(),
                    method,
                    path: path.to_owned(),
                    timeout: self.timeout,
                }
            } else {
                ApiError::Io {
                    sock: self.sock.clone(),
                    method,
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let mut stream = DeadlineStream::connect(&self.sock, self.timeout).map_err(|source| {
            match source.kind() {
                io::ErrorKind::TimedOut => io_error(source),
                _ => ApiError::Connect {
                    sock: self.sock.clone(),
                    source,
                },
            }
        })?;
        let body = body.map(|value| value.to_string().into_bytes());
        http::write_request(&mut stream, method, path, body.as_deref()).map_err(io_error)?;
        let response = http::read_response(&mut BufReader::new(stream)).map_err(|e| match e {
            ReadError::Io(source) => io_error(source),
            ReadError::Malformed(reason) => ApiError::Malformed {
                sock: self.sock.clone(),
                method,
                path: path.to_owned(),
                reason,
            },
        })?;
        match response.status {
            200..=299 => Ok(response.body),
            400 => Err(ApiError::BadRequest {
                method,
                path: path.to_owned(),
                fault_message: fault_message(&response.body),
            }),
            status => Err(ApiError::Status {
                method,
                path: path.to_owned(),
                status,
                fault_message: fault_message(&response.body),
            }),
        }
    }
}

/// Firecracker's `{"fault_message": "..."}`, or the body as text if it is
/// something else.
fn fault_message(body: &[u8]) -> String {
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::String(message)) = object.get("fault_message")
    {
        return message.clone();
    }
    let text = String::from_utf8_lossy(body).trim().to_owned();
    if text.is_empty() {
        "(no fault message)".to_owned()
    } else {
        text
    }
}

/// Everything Firecracker needs to boot one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmConfig {
    pub vcpus: u8,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub boot_args: String,
    pub rootfs: PathBuf,
    /// The root drive is the image's own rootfs (overlay): attached read-only.
    pub root_read_only: bool,
    pub work_disk: PathBuf,
    /// The seed drive banger's initramfs reads, attached read-only third.
    pub seed: Option<PathBuf>,
    /// The overlay's upper disk, attached fourth.
    pub upper: Option<PathBuf>,
    pub tap: String,
    pub mac: String,
    pub vsock_cid: u32,
    pub vsock_uds: PathBuf,
    pub log_path: PathBuf,
    pub metrics_path: PathBuf,
}

fn path_value(path: &Path) -> Value {
    Value::String(path.to_string_lossy().into_owned())
}

/// The configuration requests, in the order they are sent: each is a `PUT`
/// of the body to the path.
pub fn requests(cfg: &VmmConfig) -> Vec<(String, Value)> {
    let mut boot_source = json!({
        "kernel_image_path": path_value(&cfg.kernel),
        "boot_args": cfg.boot_args,
    });
    if let (Some(initrd), Some(object)) = (&cfg.initrd, boot_source.as_object_mut()) {
        object.insert("initrd_path".to_owned(), path_value(initrd));
    }
    let drive = |id: &str, path: &Path, read_only: bool| {
        (
            format!("/drives/{id}"),
            json!({
                "drive_id": id,
                "path_on_host": path_value(path),
                "is_root_device": false,
                "is_read_only": read_only,
            }),
        )
    };
    let mut requests = vec![
        (
            "/logger".to_owned(),
            json!({
                "log_path": path_value(&cfg.log_path),
                "level": "Info",
                "show_level": true,
                "show_log_origin": false,
            }),
        ),
        (
            "/metrics".to_owned(),
            json!({ "metrics_path": path_value(&cfg.metrics_path) }),
        ),
        (
            "/machine-config".to_owned(),
            json!({
                "vcpu_count": cfg.vcpus,
                "mem_size_mib": cfg.memory_mib,
                "smt": false,
            }),
        ),
        ("/boot-source".to_owned(), boot_source),
        (
            "/drives/rootfs".to_owned(),
            json!({
                "drive_id": "rootfs",
                "path_on_host": path_value(&cfg.rootfs),
                "is_root_device": true,
                "is_read_only": cfg.root_read_only,
            }),
        ),
        drive("work", &cfg.work_disk, false),
    ];
    // The guest sees the drives in this order: vda root, vdb work, vdc
    // seed, vdd upper.
    requests.extend(cfg.seed.as_deref().map(|seed| drive("seed", seed, true)));
    requests.extend(
        cfg.upper
            .as_deref()
            .map(|upper| drive("upper", upper, false)),
    );
    requests.extend([
        (
            "/network-interfaces/eth0".to_owned(),
            json!({
                "iface_id": "eth0",
                "guest_mac": cfg.mac,
                "host_dev_name": cfg.tap,
            }),
        ),
        (
            "/vsock".to_owned(),
            json!({
                "guest_cid": cfg.vsock_cid,
                "uds_path": path_value(&cfg.vsock_uds),
            }),
        ),
    ]);
    requests
}

/// Creates the log and metrics files (Firecracker opens but does not create
/// them), sends every [`requests`] entry, then starts the VM.
pub fn configure_and_start(client: &ApiClient, cfg: &VmmConfig) -> Result<(), ApiError> {
    for path in [&cfg.log_path, &cfg.metrics_path] {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| ApiError::CreateFile {
                path: path.clone(),
                source,
            })?;
    }
    for (path, body) in requests(cfg) {
        client.put(&path, &body)?;
    }
    client.put("/actions", &json!({ "action_type": "InstanceStart" }))
}

/// Asks the guest to shut down (its init sees Ctrl-Alt-Del; with `reboot=k`
/// the Firecracker process then exits).
pub fn send_ctrl_alt_del(client: &ApiClient) -> Result<(), ApiError> {
    client.put("/actions", &json!({ "action_type": "SendCtrlAltDel" }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{BufRead, Read, Write};
    use std::os::unix::net::UnixListener;

    fn config() -> VmmConfig {
        VmmConfig {
            vcpus: 2,
            memory_mib: 1024,
            kernel: "/var/lib/banger/images/debian/vmlinux".into(),
            initrd: Some("/var/lib/banger/images/debian/initrd.img".into()),
            boot_args: "console=ttyS0 reboot=k panic=1".to_owned(),
            rootfs: "/dev/mapper/banger-abc".into(),
            root_read_only: false,
            work_disk: "/var/lib/banger/vms/abc/work.ext4".into(),
            seed: None,
            upper: None,
            tap: "bgpool0".to_owned(),
            mac: "06:00:0a:00:00:02".to_owned(),
            vsock_cid: 3,
            vsock_uds: "/run/banger/abc/vsock.sock".into(),
            log_path: "/var/lib/banger/vms/abc/firecracker.log".into(),
            metrics_path: "/var/lib/banger/vms/abc/metrics.json".into(),
        }
    }

    #[test]
    fn requests_go_in_order_with_firecracker_field_names() {
        let requests = requests(&config());
        let paths: Vec<&str> = requests.iter().map(|(path, _)| path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/logger",
                "/metrics",
                "/machine-config",
                "/boot-source",
                "/drives/rootfs",
                "/drives/work",
                "/network-interfaces/eth0",
                "/vsock"
            ]
        );
        let body = |path: &str| &requests.iter().find(|(p, _)| p == path).unwrap().1;
        assert_eq!(
            body("/logger")["log_path"],
            "/var/lib/banger/vms/abc/firecracker.log"
        );
        assert_eq!(
            body("/metrics"),
            &json!({ "metrics_path": "/var/lib/banger/vms/abc/metrics.json" })
        );
        assert_eq!(
            body("/machine-config"),
            &json!({ "vcpu_count": 2, "mem_size_mib": 1024, "smt": false })
        );
        assert_eq!(
            body("/boot-source"),
            &json!({
                "kernel_image_path": "/var/lib/banger/images/debian/vmlinux",
                "initrd_path": "/var/lib/banger/images/debian/initrd.img",
                "boot_args": "console=ttyS0 reboot=k panic=1",
            })
        );
        assert_eq!(
            body("/drives/rootfs"),
            &json!({
                "drive_id": "rootfs",
                "path_on_host": "/dev/mapper/banger-abc",
                "is_root_device": true,
                "is_read_only": false,
            })
        );
        assert_eq!(body("/drives/work")["is_root_device"], false);
        assert_eq!(
            body("/drives/work")["path_on_host"],
            "/var/lib/banger/vms/abc/work.ext4"
        );
        assert_eq!(
            body("/network-interfaces/eth0"),
            &json!({
                "iface_id": "eth0",
                "guest_mac": "06:00:0a:00:00:02",
                "host_dev_name": "bgpool0",
            })
        );
        assert_eq!(
            body("/vsock"),
            &json!({ "guest_cid": 3, "uds_path": "/run/banger/abc/vsock.sock" })
        );
    }

    #[test]
    fn an_overlay_vm_has_a_read_only_root_then_work_seed_and_upper() {
        let cfg = VmmConfig {
            rootfs: "/var/lib/banger/images/debian/rootfs.ext4".into(),
            root_read_only: true,
            seed: Some("/var/lib/banger/vms/abc/seed.cpio".into()),
            upper: Some("/var/lib/banger/vms/abc/upper.ext4".into()),
            ..config()
        };
        let requests = requests(&cfg);
        let drives: Vec<(&str, &Value)> = requests
            .iter()
            .filter(|(path, _)| path.starts_with("/drives/"))
            .map(|(path, body)| (path.as_str(), body))
            .collect();
        let ids: Vec<&str> = drives.iter().map(|(path, _)| *path).collect();
        assert_eq!(
            ids,
            [
                "/drives/rootfs",
                "/drives/work",
                "/drives/seed",
                "/drives/upper"
            ]
        );
        let read_only: Vec<bool> = drives
            .iter()
            .map(|(_, body)| body["is_read_only"].as_bool().unwrap())
            .collect();
        assert_eq!(read_only, [true, false, true, false]);
        assert_eq!(
            drives[2].1["path_on_host"],
            "/var/lib/banger/vms/abc/seed.cpio"
        );
    }

    #[test]
    fn boot_source_without_initrd_omits_it() {
        let cfg = VmmConfig {
            initrd: None,
            ..config()
        };
        let requests = requests(&cfg);
        let boot = &requests
            .iter()
            .find(|(p, _)| p == "/boot-source")
            .unwrap()
            .1;
        assert!(boot.get("initrd_path").is_none(), "{boot}");
    }

    #[test]
    fn fault_message_is_verbatim() {
        assert_eq!(
            fault_message(br#"{"fault_message":"Invalid request method and/or path: GET nope."}"#),
            "Invalid request method and/or path: GET nope."
        );
        assert_eq!(fault_message(b"  plain text\n"), "plain text");
        assert_eq!(fault_message(b""), "(no fault message)");
        assert_eq!(fault_message(br#"{"other":1}"#), r#"{"other":1}"#);
    }

    /// A response with `body` and its Content-Length.
    fn sized(status: u16, body: &str) -> String {
        format!(
            "HTTP/1.1 {status} \r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// Serves one canned response per connection and returns each request it saw.
    fn serve_once(dir: &Path, response: String) -> std::thread::JoinHandle<String> {
        let listener = UnixListener::bind(dir.join("api.sock")).unwrap();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = std::io::BufReader::new(&stream);
            let mut request = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(value) = line.strip_prefix("Content-Length: ") {
                    length = value.trim().parse().unwrap();
                }
                request.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            request.push_str(&String::from_utf8(body).unwrap());
            (&stream).write_all(response.as_bytes()).unwrap();
            request
        })
    }

    #[test]
    fn a_dripping_vmm_fails_the_request_within_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        crate::host::deadline::tests::drip(
            &sock,
            b"HTTP/1.1 200 \r\nContent-Length: 100000\r\n\r\n{",
            Duration::from_millis(25),
        );
        let client = ApiClient::with_timeout(&sock, Duration::from_millis(400));
        let started = std::time::Instant::now();
        let err = client.get("/").unwrap_err();
        assert!(matches!(err, ApiError::Timeout { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "GET / on the Firecracker API socket {} timed out after 400ms",
                sock.display()
            )
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn put_sends_json_and_accepts_no_content() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_once(dir.path(), "HTTP/1.1 204 \r\n\r\n".to_owned());
        let client = ApiClient::new(&dir.path().join("api.sock"));
        client
            .put("/actions", &json!({ "action_type": "InstanceStart" }))
            .unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("PUT /actions HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n{\"action_type\":\"InstanceStart\"}"));
    }

    #[test]
    fn bad_request_carries_the_fault_message() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_once(
            dir.path(),
            sized(400, r#"{"fault_message":"vCPUs must be greater than 0"}"#),
        );
        let client = ApiClient::new(&dir.path().join("api.sock"));
        let error = client
            .patch("/machine-config", &json!({ "vcpu_count": 0 }))
            .unwrap_err();
        assert!(server.join().unwrap().starts_with("PATCH /machine-config "));
        match &error {
            ApiError::BadRequest {
                method,
                path,
                fault_message,
            } => {
                assert_eq!((*method, path.as_str()), ("PATCH", "/machine-config"));
                assert_eq!(fault_message, "vCPUs must be greater than 0");
            }
            other => panic!("expected BadRequest, got {other:?}"),
        }
        assert_eq!(
            error.to_string(),
            "Firecracker rejected PATCH /machine-config: vCPUs must be greater than 0"
        );
    }

    #[test]
    fn server_error_keeps_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_once(
            dir.path(),
            "HTTP/1.1 500 \r\nTransfer-Encoding: chunked\r\n\r\n\
             12\r\n{\"fault_message\":\"\r\n5\r\nboom\"\r\n1\r\n}\r\n0\r\n\r\n"
                .to_owned(),
        );
        let client = ApiClient::new(&dir.path().join("api.sock"));
        let error = client.get("/").unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(&error, ApiError::Status { status: 500, fault_message, .. } if fault_message == "boom"),
            "{error:?}"
        );
    }

    #[test]
    fn get_returns_the_json_body() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_once(dir.path(), sized(200, r#"{"state":"Running"}"#));
        let client = ApiClient::new(&dir.path().join("api.sock"));
        assert_eq!(client.get("/").unwrap(), json!({ "state": "Running" }));
        assert!(server.join().unwrap().starts_with("GET / HTTP/1.1\r\n"));
    }

    #[test]
    fn missing_socket_is_a_connect_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let error = ApiClient::new(&sock).get("/").unwrap_err();
        assert!(matches!(error, ApiError::Connect { .. }), "{error:?}");
        assert!(error.to_string().contains(&sock.display().to_string()));
    }

    #[test]
    fn configure_and_start_creates_log_and_metrics_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = VmmConfig {
            log_path: dir.path().join("firecracker.log"),
            metrics_path: dir.path().join("metrics.json"),
            ..config()
        };
        let server = serve_once(dir.path(), sized(400, r#"{"fault_message":"nope"}"#));
        let error =
            configure_and_start(&ApiClient::new(&dir.path().join("api.sock")), &cfg).unwrap_err();
        assert!(server.join().unwrap().starts_with("PUT /logger "));
        assert!(matches!(error, ApiError::BadRequest { .. }), "{error:?}");
        assert!(cfg.log_path.is_file());
        assert!(cfg.metrics_path.is_file());
    }
}
