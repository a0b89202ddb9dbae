//! Test harness for the shim: a shim process per test in a temp dir, a tiny
//! HTTP client for its API socket, and a guest initramfs built from busybox.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/test-deps.sh put the real parts.
pub fn deps() -> PathBuf {
    std::env::var_os("BANGER_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-deps"))
}

/// Skips (returns true after saying why) unless root with every path in `needs` present.
pub fn skip_unless_root_with(needs: &[&Path]) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping guest test: needs root");
        return true;
    }
    for path in needs {
        if !path.exists() {
            eprintln!(
                "skipping guest test: {} is missing (run scripts/test-deps.sh)",
                path.display()
            );
            return true;
        }
    }
    false
}

/// A running shim; killed (with whatever it started) when dropped.
pub struct Shim {
    pub dir: tempfile::TempDir,
    pub api_sock: PathBuf,
    pub console: PathBuf,
    pub stderr: PathBuf,
    pub child: Child,
}

impl Shim {
    /// Starts the shim with deps()/bin ahead of PATH, as banger would run Firecracker.
    pub fn start() -> Self {
        let path = format!(
            "{}:{}",
            deps().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self::start_with_path(&path)
    }

    pub fn start_with_path(path: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shim")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let api_sock = dir.path().join("api.sock");
        let console = dir.path().join("console.log");
        let stderr = dir.path().join("shim.err");
        let child = Command::new(env!("CARGO_BIN_EXE_vmm-shim"))
            .arg("--api-sock")
            .arg(&api_sock)
            .args(["--id", "shim-test", "--no-seccomp", "--level", "Info"])
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(File::create(&console).expect("console log"))
            .stderr(File::create(&stderr).expect("stderr log"))
            .spawn()
            .expect("spawn vmm-shim");
        let shim = Self {
            dir,
            api_sock,
            console,
            stderr,
            child,
        };
        assert!(
            // The file appears at bind(), before listen(): wait until it accepts.
            eventually(Duration::from_secs(10), || UnixStream::connect(
                &shim.api_sock
            )
            .is_ok()),
            "API socket never accepted a connection"
        );
        shim
    }

    /// One request on its own connection: (status, body).
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut stream = UnixStream::connect(&self.api_sock).expect("connect API socket");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read response");
        parse_response(&response)
    }

    pub fn put(&self, path: &str, body: &str) -> (u16, String) {
        self.request("PUT", path, body)
    }

    /// PUT that must succeed with 204.
    pub fn put_ok(&self, path: &str, body: &str) {
        let (status, body) = self.put(path, body);
        assert_eq!(status, 204, "PUT {path}: {body}");
    }

    pub fn state(&self) -> String {
        let (status, body) = self.request("GET", "/", "");
        assert_eq!(status, 200, "GET /: {body}");
        let info: serde_json::Value = serde_json::from_str(&body).expect("GET / JSON");
        info["state"].as_str().expect("state").to_owned()
    }

    pub fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for the shim to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    /// PIDs of the shim's live child processes, with their command names.
    pub fn children(&self) -> Vec<(i32, String)> {
        children_of(self.child.id())
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_response(response: &str) -> (u16, String) {
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The `fault_message` of an error body.
pub fn fault(body: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    value["fault_message"]
        .as_str()
        .unwrap_or_else(|| panic!("no fault_message in {body}"))
        .to_owned()
}

/// Live (not zombie) children of `parent`: (pid, comm).
pub fn children_of(parent: u32) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head
            .split_once('(')
            .map(|(_, c)| c.to_owned())
            .unwrap_or_default();
        let mut fields = tail.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == parent && state != "Z" {
            found.push((pid, comm));
        }
    }
    found
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Writes a newc initramfs holding /bin/busybox, `init` as /init, and `extra` files at the top.
pub fn write_initramfs(path: &Path, init: &str, extra: &[(String, Vec<u8>)]) {
    let busybox = std::fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
    let mut entries: Vec<(&str, u32, &[u8])> = vec![
        ("bin", 0o040_755, b""),
        ("bin/busybox", 0o100_755, &busybox),
        ("init", 0o100_755, init.as_bytes()),
    ];
    entries.extend(
        extra
            .iter()
            .map(|(name, data)| (name.as_str(), 0o100_755, data.as_slice())),
    );
    let mut out = Vec::new();
    for (ino, (name, mode, data)) in (1..).zip(entries) {
        push_newc(&mut out, ino, name, mode, data);
    }
    push_newc(&mut out, 0, "TRAILER!!!", 0, b"");
    std::fs::write(path, out).expect("write initramfs");
}

fn push_newc(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = if mode & 0o040_000 != 0 { 2 } else { 1 };
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(data.len()).expect("size"),
        0,
        0,
        0,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(format!("{:08x}{:08x}", name.len() + 1, 0).as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}
