//! Walking `/proc`: live processes, their command lines, environments and
//! children, and polling until something holds.

use std::time::{Duration, Instant};

/// Every numeric entry of `/proc`: the PIDs of all processes.
fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse().ok())
}

/// `/proc/PID/stat` split into (comm, fields after the command name).
fn stat(pid: i32) -> Option<(String, Vec<String>)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, tail) = stat.rsplit_once(')')?;
    let comm = head.split_once('(').map(|(_, c)| c.to_owned())?;
    Some((comm, tail.split_whitespace().map(str::to_owned).collect()))
}

/// Whether `pid` names a live (not zombie) process.
pub fn pid_alive(pid: impl TryInto<i32>) -> bool {
    let Ok(pid) = pid.try_into() else {
        return false;
    };
    stat(pid).is_some_and(|(_, fields)| fields.first().is_some_and(|state| state != "Z"))
}

/// The arguments `pid` was started with.
pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|arg| !arg.is_empty())
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is a VMM (Firecracker or the shim): it was given `--api-sock`.
pub fn is_vmm(pid: i32) -> bool {
    cmdline(pid).iter().any(|arg| arg.starts_with("--api-sock"))
}

/// Live processes with the variable `needle` (`KEY=value`) in their environment.
pub fn processes_with_env(needle: &str) -> Vec<i32> {
    pids()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|var| var == needle.as_bytes())
            })
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Live (not zombie) children of `parent`: (pid, comm).
pub fn children_of(parent: u32) -> Vec<(i32, String)> {
    pids()
        .filter_map(|pid| {
            let (comm, fields) = stat(pid)?;
            let state = fields.first()?;
            let ppid: u32 = fields.get(1)?.parse().ok()?;
            (ppid == parent && state != "Z").then_some((pid, comm))
        })
        .collect()
}

/// Polls `f` every 50 ms until it returns true or `timeout` passes; the last
/// answer is returned.
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
