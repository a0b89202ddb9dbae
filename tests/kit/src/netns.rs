//! Network namespaces for tests: code run on a thread moved into a fresh
//! namespace, and named namespaces (`ip netns add`) that delete themselves.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use crate::run;

/// Runs `f` on a thread moved into a fresh network namespace with `lo` up,
/// propagating its panic. Threads and processes started from it share that
/// namespace; it vanishes with its last user, taking every link and nftables
/// table with it.
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        let worker = scope.spawn(|| {
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
    })
}

/// `ip -j -d addr show dev NAME` as JSON (the first and only element).
pub fn link_json(name: &str) -> serde_json::Value {
    let out = run("ip", &["-j", "-d", "addr", "show", "dev", name]);
    let mut links: Vec<serde_json::Value> = serde_json::from_str(&out).expect("ip -j output");
    assert_eq!(links.len(), 1, "{out}");
    links.remove(0)
}

/// A veth pair: `a_end` in namespace `a`, `b_end` in namespace `b`.
pub fn veth(a: &str, a_end: &str, b: &str, b_end: &str) {
    run(
        "ip",
        &[
            "link", "add", a_end, "netns", a, "type", "veth", "peer", "name", b_end, "netns", b,
        ],
    );
}

/// A uniquely named namespace (`ip netns add`) with `lo` up, deleted on drop.
pub struct NamedNetns {
    pub name: String,
}

impl NamedNetns {
    /// A new namespace named `bgt-<pid>-<n>-<role>`.
    pub fn new(role: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        Self::named(format!(
            "bgt-{}-{}-{role}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// A new namespace called `name`.
    pub fn named(name: String) -> Self {
        run("ip", &["netns", "add", &name]);
        let ns = NamedNetns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside this namespace; returns its stdout.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that runs `program` inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
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
