//! Processes: starting one detached, and as `/proc` shows them: which process
//! is the VMM behind an API socket, signalling it, and waiting for it to exit.
//!
//! A VMM is recognised by the `--api-sock <path>` in its command line, not by
//! its binary name (tests stand a different VMM in for Firecracker), which
//! also guards against a recorded PID having been reused.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use procfs::process::{ProcState, Process};

/// How often [`wait_exit`] looks again.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("{pid} is not a process id that can be signalled")]
    InvalidPid { pid: u32 },
    #[error("cannot send {signal} to process {pid}")]
    Signal {
        pid: u32,
        signal: Signal,
        #[source]
        source: Errno,
    },
    #[error("process {pid} is still alive after SIGKILL")]
    StillAlive { pid: u32 },
    #[error("cannot start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Starts `cmd` detached: in a session of its own (so it outlives banger and
/// no terminal signal reaches it), stdin from `/dev/null`, stdout and stderr
/// to the given files. Returns its PID; it is not waited for.
pub fn spawn_detached(cmd: &mut Command, stdout: File, stderr: File) -> Result<u32, ProcError> {
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2), which is async-signal-safe and touches no shared memory.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(io::Error::from));
    }
    let child = cmd.spawn().map_err(|source| ProcError::Spawn {
        program: PathBuf::from(cmd.get_program()),
        source,
    })?;
    Ok(child.id())
}

/// The `--api-sock` argument of a command line (`--api-sock PATH` or
/// `--api-sock=PATH`).
pub fn api_sock_arg(cmdline: &[String]) -> Option<&Path> {
    cmdline.iter().enumerate().find_map(|(i, arg)| {
        if arg == "--api-sock" {
            cmdline.get(i + 1).map(Path::new)
        } else {
            arg.strip_prefix("--api-sock=").map(Path::new)
        }
    })
}

fn process(pid: u32) -> Option<Process> {
    Process::new(i32::try_from(pid).ok().filter(|pid| *pid > 0)?).ok()
}

fn is_running(process: &Process) -> bool {
    process
        .stat()
        .and_then(|stat| stat.state())
        .is_ok_and(|state| !matches!(state, ProcState::Zombie | ProcState::Dead))
}

/// `pid` exists and has not exited (a zombie has exited).
pub fn is_alive(pid: u32) -> bool {
    process(pid).is_some_and(|process| is_running(&process))
}

/// A live process with an `--api-sock` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    pid: u32,
    ppid: u32,
    sock: PathBuf,
}

fn candidate(process: &Process) -> Option<Candidate> {
    let cmdline = process.cmdline().ok()?;
    let sock = api_sock_arg(&cmdline)?.to_owned();
    let stat = process.stat().ok()?;
    if matches!(stat.state().ok()?, ProcState::Zombie | ProcState::Dead) {
        return None;
    }
    Some(Candidate {
        pid: u32::try_from(stat.pid).ok()?,
        ppid: u32::try_from(stat.ppid).ok()?,
        sock,
    })
}

/// The live VMM serving `api_sock`: `hint` (the recorded PID) if it still is
/// that VMM, else whichever process `/proc` shows with that socket.
pub fn vmm_pid(hint: Option<u32>, api_sock: &Path) -> Option<u32> {
    if let Some(pid) = hint
        && process(pid)
            .and_then(|process| candidate(&process))
            .is_some_and(|found| found.sock == api_sock)
    {
        return Some(pid);
    }
    live_vmms()
        .into_iter()
        .find(|(_, sock)| sock == api_sock)
        .map(|(pid, _)| pid)
}

/// Every live VMM whose API socket lies under `run_dir`, with that socket.
pub fn vmms_under(run_dir: &Path) -> Vec<(u32, PathBuf)> {
    live_vmms()
        .into_iter()
        .filter(|(_, sock)| sock.starts_with(run_dir))
        .collect()
}

fn live_vmms() -> Vec<(u32, PathBuf)> {
    let candidates = procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|process| candidate(&process))
        .collect();
    without_forks(candidates)
}

/// Drops the children a VMM has forked but not yet exec'd: until exec they
/// carry its command line, so they look like a second VMM on its socket.
fn without_forks(candidates: Vec<Candidate>) -> Vec<(u32, PathBuf)> {
    candidates
        .iter()
        .filter(|child| {
            !candidates
                .iter()
                .any(|parent| parent.pid == child.ppid && parent.sock == child.sock)
        })
        .map(|vmm| (vmm.pid, vmm.sock.clone()))
        .collect()
}

/// Sends `sig` to `pid`; a process that is already gone is not an error.
pub fn signal(pid: u32, sig: Signal) -> Result<(), ProcError> {
    let raw = i32::try_from(pid)
        .ok()
        .filter(|raw| *raw > 0)
        .ok_or(ProcError::InvalidPid { pid })?;
    match kill(Pid::from_raw(raw), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(ProcError::Signal {
            pid,
            signal: sig,
            source,
        }),
    }
}

/// Waits up to `timeout` for `pid` to exit; true once it has. A zombie has
/// exited; if it is this process's child it is reaped.
pub fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(pid) {
            reap(pid);
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Collects `pid`'s exit status if it is an exited child of ours.
fn reap(pid: u32) {
    if let Some(raw) = i32::try_from(pid).ok().filter(|raw| *raw > 0) {
        // ECHILD (not our child) and "still running" both leave nothing to do.
        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn api_sock_is_found_in_either_form() {
        let fc = args(&[
            "/usr/bin/firecracker",
            "--api-sock",
            "/run/banger/abc/api.sock",
            "--id",
            "abc",
        ]);
        assert_eq!(
            api_sock_arg(&fc),
            Some(Path::new("/run/banger/abc/api.sock"))
        );
        let joined = args(&["banger-vmm-qemu", "--api-sock=/run/banger/x/api.sock"]);
        assert_eq!(
            api_sock_arg(&joined),
            Some(Path::new("/run/banger/x/api.sock"))
        );
        assert_eq!(api_sock_arg(&args(&["firecracker", "--api-sock"])), None);
        assert_eq!(api_sock_arg(&args(&["bash", "-c", "sleep 1"])), None);
        assert_eq!(api_sock_arg(&[]), None);
    }

    /// A stand-in VMM: a shell that idles, with `--api-sock <sock>` in its
    /// command line (a loop, so the shell does not exec into `sleep`; it
    /// keeps forking, as a VMM may). Killed and reaped on drop.
    struct FakeVmm {
        pid: u32,
    }

    impl FakeVmm {
        fn spawn(sock: &Path) -> Self {
            let pid = Command::new("sh")
                .arg("-c")
                .arg("while :; do sleep 0.1; done")
                .arg("--api-sock")
                .arg(sock)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
                .id();
            // spawn returns once the child is inside exec, possibly before
            // the kernel has set up the argument pages /proc reads.
            let deadline = Instant::now() + Duration::from_secs(5);
            while process(pid)
                .and_then(|p| p.cmdline().ok())
                .is_none_or(|c| c.is_empty())
            {
                assert!(
                    Instant::now() < deadline,
                    "{pid} never showed a command line"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Self { pid }
        }
    }

    impl Drop for FakeVmm {
        fn drop(&mut self) {
            let _ = signal(self.pid, Signal::SIGKILL);
            wait_exit(self.pid, Duration::from_secs(5));
        }
    }

    #[test]
    fn vmm_is_found_by_hint_or_by_scan_and_gone_after_kill() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let vmm = FakeVmm::spawn(&sock);
        let pid = vmm.pid;
        assert_eq!(vmm_pid(Some(pid), &sock), Some(pid));
        assert_eq!(vmm_pid(None, &sock), Some(pid));
        assert_eq!(vmm_pid(Some(std::process::id()), &sock), Some(pid));
        for _ in 0..50 {
            assert_eq!(vmms_under(dir.path()), vec![(pid, sock.clone())]);
        }
        assert_eq!(vmm_pid(Some(pid), &dir.path().join("other.sock")), None);

        signal(pid, Signal::SIGKILL).unwrap();
        assert!(wait_exit(pid, Duration::from_secs(5)));
        assert!(!is_alive(pid));
        assert_eq!(vmm_pid(Some(pid), &sock), None);
        assert!(vmms_under(dir.path()).is_empty());
        signal(pid, Signal::SIGTERM).unwrap();
    }

    #[test]
    fn forked_children_of_a_vmm_are_not_vmms() {
        let vmm = |pid, ppid, sock: &str| Candidate {
            pid,
            ppid,
            sock: sock.into(),
        };
        let found = without_forks(vec![
            vmm(100, 1, "/run/banger/a/api.sock"),
            vmm(101, 100, "/run/banger/a/api.sock"),
            vmm(200, 100, "/run/banger/b/api.sock"),
            vmm(300, 1, "/run/banger/c/api.sock"),
        ]);
        assert_eq!(
            found,
            vec![
                (100, PathBuf::from("/run/banger/a/api.sock")),
                (200, PathBuf::from("/run/banger/b/api.sock")),
                (300, PathBuf::from("/run/banger/c/api.sock")),
            ]
        );
    }

    #[test]
    fn zombie_counts_as_exited() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let vmm = FakeVmm::spawn(&sock);
        let pid = vmm.pid;
        assert!(!wait_exit(pid, Duration::from_millis(30)));
        signal(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process(pid).is_some_and(|p| is_running(&p)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(process(pid).is_some(), "an unreaped child stays in /proc");
        assert_eq!(vmm_pid(Some(pid), &sock), None);
        assert!(wait_exit(pid, Duration::ZERO));
        assert!(process(pid).is_none(), "wait_exit reaps its own child");
    }

    #[test]
    fn detached_process_has_its_own_session_and_the_given_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        let out = File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let pid = spawn_detached(
            Command::new("sh").args(["-c", "read -r line; echo \"[$line]\"; echo oops >&2"]),
            out,
            err,
        )
        .unwrap();
        assert!(wait_exit(pid, Duration::from_secs(5)));
        assert_eq!(fs_text(&log), "[]\noops\n", "stdin is /dev/null");

        let pid = spawn_detached(
            Command::new("sleep").arg("5"),
            File::create(dir.path().join("o")).unwrap(),
            File::create(dir.path().join("e")).unwrap(),
        )
        .unwrap();
        let session = process(pid).unwrap().stat().unwrap().session;
        signal(pid, Signal::SIGKILL).unwrap();
        assert!(wait_exit(pid, Duration::from_secs(5)));
        assert_eq!(u32::try_from(session).unwrap(), pid, "a session leader");

        let err = spawn_detached(
            &mut Command::new("/nonexistent/vmm"),
            File::create(dir.path().join("o")).unwrap(),
            File::create(dir.path().join("e")).unwrap(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "cannot start /nonexistent/vmm");
    }

    fn fs_text(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn invalid_pids_are_refused() {
        assert!(matches!(
            signal(0, Signal::SIGTERM),
            Err(ProcError::InvalidPid { pid: 0 })
        ));
        assert!(signal(u32::MAX, Signal::SIGTERM).is_err());
        assert!(!is_alive(0));
        assert_eq!(vmm_pid(Some(0), Path::new("/nonexistent/api.sock")), None);
    }
}
