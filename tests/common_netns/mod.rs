//! Test helpers: run code in a private network namespace, named namespaces
//! that delete themselves, and small wrappers around `ip` and `nft`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// True when running as root; otherwise prints why the test is skipped.
pub fn require_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping {test}: needs root (network namespaces, bridges, nftables)");
    false
}

/// Runs `f` on a thread moved into a fresh network namespace with `lo` up.
/// Threads and processes started from it share that namespace; it vanishes
/// with its last user, taking every link and nftables table with it.
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let worker = thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET only changes the
        // calling thread's network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"]);
        f()
    });
    match worker.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a command to completion, panicking with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `program` with `stdin` fed to it, panicking on failure.
pub fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `ip -j -d link show dev NAME` as JSON (the first and only element).
pub fn link_json(name: &str) -> serde_json::Value {
    let out = run("ip", &["-j", "-d", "addr", "show", "dev", name]);
    let mut links: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ip -j output");
    assert_eq!(links.len(), 1, "{out}");
    links.remove(0)
}

/// A uniquely named namespace (`ip netns add`), deleted on drop.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bgt-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = NamedNetns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside this namespace.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs `f` on a thread that has joined this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        let ns = File::open(&path).unwrap_or_else(|err| panic!("open {path}: {err}"));
        thread::spawn(move || {
            // SAFETY: ns is an open namespace file that outlives the call;
            // setns only changes the calling thread's network namespace.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            drop(ns);
            f()
        })
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
