//! The one way tests run QEMU by hand: banger's QEMU VMM (`src/vmm-qemu`) as its own
//! process in a temp dir, configured over Firecracker's API.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::procs::eventually;

/// A running shim; killed (with whatever it started) when dropped.
pub struct Shim {
    pub dir: tempfile::TempDir,
    pub api_sock: PathBuf,
    pub console: PathBuf,
    pub stderr: PathBuf,
    pub child: Child,
}

impl Shim {
    /// Starts the shim with the fixtures' `bin/` ahead of PATH, as banger
    /// would run Firecracker.
    pub fn start() -> Self {
        let path = format!(
            "{}:{}",
            crate::deps().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self::start_with_path(&path)
    }

    /// Starts the shim with `path` as its PATH (where it finds QEMU and the
    /// vsock backend).
    pub fn start_with_path(path: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shim")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let api_sock = dir.path().join("api.sock");
        let console = dir.path().join("console.log");
        let stderr = dir.path().join("shim.err");
        let child = Command::new(crate::vmm_qemu())
            .arg("--api-sock")
            .arg(&api_sock)
            .args(["--id", "shim-test", "--no-seccomp", "--level", "Info"])
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(File::create(&console).expect("console log"))
            .stderr(File::create(&stderr).expect("stderr log"))
            .spawn()
            .expect("spawn banger-vmm-qemu");
        let shim = Self {
            dir,
            api_sock,
            console,
            stderr,
            child,
        };
        // The file appears at bind(), before listen(): wait until it accepts.
        assert!(
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
        crate::api::request(&self.api_sock, method, path, body)
    }

    pub fn put(&self, path: &str, body: &str) -> (u16, String) {
        self.request("PUT", path, body)
    }

    /// PUT that must succeed with 204.
    pub fn put_ok(&self, path: &str, body: &str) {
        let (status, body) = self.put(path, body);
        assert_eq!(status, 204, "PUT {path}: {body}");
    }

    /// The instance state `GET /` reports.
    pub fn state(&self) -> String {
        crate::api::instance_state(&self.api_sock)
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard controller.
    pub fn ctrl_alt_del(&self) {
        self.put_ok("/actions", r#"{"action_type":"SendCtrlAltDel"}"#);
    }

    /// Starts the guest.
    pub fn instance_start(&self) {
        self.put_ok("/actions", r#"{"action_type":"InstanceStart"}"#);
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

    /// Waits for the shim to exit by itself and asserts it exited with 0.
    pub fn assert_exits_cleanly(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "shim exit; stderr:\n{}\nconsole:\n{}",
            self.stderr_text(),
            self.console_text()
        );
    }

    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: sending a signal to our own child; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {pid}");
    }

    /// PIDs of the shim's live child processes, with their command names.
    pub fn children(&self) -> Vec<(i32, String)> {
        crate::procs::children_of(self.child.id())
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
