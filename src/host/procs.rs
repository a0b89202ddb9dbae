//! Processes: starting one detached, and as `/proc` shows them: which process
//! is the VMM behind an API socket, signalling it, and waiting for it to exit.
//!
//! A VMM is recognised by what the kernel says about it, never by its
//! command line (anyone can put `--api-sock <path>` in theirs): the file it
//! runs (device and inode of `/proc/PID/exe`), its effective user, and the
//! socket it holds bound at the VM's API socket path (device and inode of
//! that file, matched through `/proc/PID/fd` and `/proc/PID/net/unix`). This
//! also guards against a recorded PID having been reused.

use std::collections::HashMap;
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
use procfs::net::UnixState;
use procfs::process::{FDTarget, ProcState, Process};

use crate::state::model::FileId;

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
/// no terminal signal reaches it), with umask 077 (what it creates, such as
/// a VMM's sockets, is private whatever banger's umask), stdin from
/// `/dev/null`, stdout and stderr to the given files. Returns its PID; it is
/// not waited for.
pub fn spawn_detached(cmd: &mut Command, stdout: File, stderr: File) -> Result<u32, ProcError> {
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid(2) and umask(2), which are async-signal-safe and touch no
    // shared memory.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
            nix::unistd::setsid().map(drop).map_err(io::Error::from)
        });
    }
    let child = cmd.spawn().map_err(|source| ProcError::Spawn {
        program: PathBuf::from(cmd.get_program()),
        source,
    })?;
    Ok(child.id())
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

/// The file `path` names (following symlinks), as the kernel identifies it.
pub fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|meta| FileId::of(&meta))
}

/// The executable `pid` runs, as the kernel identifies it (the file it was
/// exec'd from, even if that has since been replaced or deleted).
pub fn exe_id(pid: u32) -> Option<FileId> {
    file_id(&PathBuf::from(format!("/proc/{pid}/exe")))
}

/// The Unix socket bound at `path` (not following a symlink there).
fn socket_id(path: &Path) -> Option<FileId> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    meta.file_type().is_socket().then(|| FileId::of(&meta))
}

/// What makes a process a VMM of banger's: it runs one of `exes` and as
/// banger's effective user.
#[derive(Debug, Clone, Copy)]
pub struct VmmIdentity<'a> {
    pub exes: &'a [FileId],
    pub uid: u32,
}

impl<'a> VmmIdentity<'a> {
    /// A VMM running one of `exes` as this process's effective user.
    pub fn ours(exes: &'a [FileId]) -> Self {
        Self {
            exes,
            uid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// A live process that runs a VMM binary as banger's user, with the paths
/// its Unix sockets are bound to, as the kernel recorded them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    pid: u32,
    ppid: u32,
    bound: Vec<PathBuf>,
}

/// The bound, unconnected (listening) Unix sockets of the network namespaces
/// seen so far, by the namespace's inode: one read of `/proc/PID/net/unix`
/// per namespace. A connection the server accepted shows its listener's path
/// too; it is left out, so one VMM with a client still connected is not its
/// socket twice.
#[derive(Default)]
struct UnixTables(HashMap<u64, HashMap<u64, PathBuf>>);

impl UnixTables {
    fn of(&mut self, process: &Process) -> Option<&HashMap<u64, PathBuf>> {
        let ns = file_id(&PathBuf::from(format!("/proc/{}/ns/net", process.pid)))?.ino;
        if let std::collections::hash_map::Entry::Vacant(slot) = self.0.entry(ns) {
            let table = process
                .unix()
                .ok()?
                .into_iter()
                .filter(|entry| entry.state == UnixState::UNCONNECTED)
                .filter_map(|entry| Some((entry.inode, entry.path?)))
                .filter(|(_, path)| path.is_absolute())
                .collect();
            slot.insert(table);
        }
        self.0.get(&ns)
    }
}

fn candidate(process: &Process, who: VmmIdentity, tables: &mut UnixTables) -> Option<Candidate> {
    let pid = u32::try_from(process.pid).ok()?;
    if !who.exes.contains(&exe_id(pid)?) || process.status().ok()?.euid != who.uid {
        return None;
    }
    let stat = process.stat().ok()?;
    if matches!(stat.state().ok()?, ProcState::Zombie | ProcState::Dead) {
        return None;
    }
    let sockets: Vec<u64> = process
        .fd()
        .ok()?
        .flatten()
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let table = tables.of(process)?;
    let mut bound: Vec<PathBuf> = sockets
        .iter()
        .filter_map(|inode| table.get(inode).cloned())
        .collect();
    bound.sort();
    bound.dedup();
    Some(Candidate {
        pid,
        ppid: u32::try_from(stat.ppid).ok()?,
        bound,
    })
}

/// Whether `found` serves the socket file `sock`: one of its sockets is
/// bound at a path that names that very file.
fn serves(found: &Candidate, sock: FileId) -> bool {
    found.bound.iter().any(|path| socket_id(path) == Some(sock))
}

/// The live VMM serving `api_sock`: `hint` (the recorded PID) if it still is
/// that VMM, else whichever process `/proc` shows serving it. A process
/// counts only if it runs one of `who`'s executables as `who`'s user and
/// holds the socket bound at `api_sock` (same device and inode, whichever
/// spelling of the path it was bound by); its command line is never read.
pub fn vmm_pid(hint: Option<u32>, api_sock: &Path, who: VmmIdentity) -> Option<u32> {
    let sock = socket_id(api_sock)?;
    let mut tables = UnixTables::default();
    if let Some(pid) = hint
        && process(pid)
            .and_then(|process| candidate(&process, who, &mut tables))
            .is_some_and(|found| serves(&found, sock))
    {
        return Some(pid);
    }
    let serving: Vec<Candidate> = candidates(who, &mut tables)
        .into_iter()
        .filter(|found| serves(found, sock))
        .collect();
    without_forks(serving).first().map(|vmm| vmm.pid)
}

/// Every live VMM (as `who` says) serving a socket `<run_dirs>/<id>/api.sock`,
/// with that socket's path. A socket whose file is gone (its VM's directory
/// was removed under it) is matched by the path the kernel recorded when it
/// was bound.
pub fn vmms_under(run_dirs: &Path, who: VmmIdentity) -> Vec<(u32, PathBuf)> {
    let sockets: HashMap<FileId, PathBuf> = std::fs::read_dir(run_dirs)
        .map(|dir| dir.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|entry| entry.path().join("api.sock"))
        .filter_map(|sock| Some((socket_id(&sock)?, sock)))
        .collect();
    let mut tables = UnixTables::default();
    let mut found = Vec::new();
    for mut vmm in candidates(who, &mut tables) {
        vmm.bound = vmm
            .bound
            .iter()
            .filter_map(|path| match socket_id(path) {
                Some(id) => sockets.get(&id).cloned(),
                None if path.starts_with(run_dirs) && !path.exists() => Some(path.clone()),
                None => None,
            })
            .collect();
        if !vmm.bound.is_empty() {
            found.push(vmm);
        }
    }
    without_forks(found)
        .into_iter()
        .flat_map(|vmm| vmm.bound.into_iter().map(move |sock| (vmm.pid, sock)))
        .collect()
}

fn candidates(who: VmmIdentity, tables: &mut UnixTables) -> Vec<Candidate> {
    if who.exes.is_empty() {
        return Vec::new();
    }
    procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|process| candidate(&process, who, tables))
        .collect()
}

/// Drops the children a VMM has forked but not yet exec'd: until exec they
/// run its binary and hold its sockets, so they look like a second VMM.
fn without_forks(candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates
        .iter()
        .filter(|child| {
            !candidates.iter().any(|parent| {
                parent.pid == child.ppid && parent.bound.iter().any(|p| child.bound.contains(p))
            })
        })
        .cloned()
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
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixListener;
    use std::process::{Command, Stdio};

    /// A stand-in VMM: a shell that idles (a loop, so it does not exec into
    /// `sleep`; it keeps forking, as a VMM may), holding `listener` if given,
    /// with `args` after its script. Killed and reaped on drop.
    struct FakeVmm {
        pid: u32,
    }

    impl FakeVmm {
        fn spawn(listener: Option<&UnixListener>, args: &[&std::ffi::OsStr]) -> Self {
            let mut cmd = Command::new("sh");
            cmd.arg("-c")
                .arg("while :; do sleep 0.1; done")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(fd) = listener.map(AsRawFd::as_raw_fd) {
                // SAFETY: dup2(2) is async-signal-safe; the copy (fd 100)
                // has no close-on-exec flag, so the shell inherits it.
                unsafe {
                    cmd.pre_exec(move || match libc::dup2(fd, 100) {
                        -1 => Err(io::Error::last_os_error()),
                        _ => Ok(()),
                    });
                }
            }
            Self {
                pid: cmd.spawn().unwrap().id(),
            }
        }
    }

    impl Drop for FakeVmm {
        fn drop(&mut self) {
            let _ = signal(self.pid, Signal::SIGKILL);
            wait_exit(self.pid, Duration::from_secs(5));
        }
    }

    fn shell() -> Vec<FileId> {
        vec![file_id(Path::new("/bin/sh")).unwrap()]
    }

    #[test]
    fn vmm_is_found_by_its_socket_and_binary_never_by_its_argv() {
        let dir = tempfile::tempdir().unwrap();
        let vm_dir = dir.path().join("0123456789");
        std::fs::create_dir(&vm_dir).unwrap();
        let sock = vm_dir.join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let vmm = FakeVmm::spawn(Some(&listener), &[]);
        drop(listener);
        let impostor = FakeVmm::spawn(None, &["--api-sock".as_ref(), sock.as_os_str()]);
        let exes = shell();
        let who = VmmIdentity::ours(&exes);
        let pid = vmm.pid;

        assert_eq!(vmm_pid(Some(pid), &sock, who), Some(pid));
        assert_eq!(vmm_pid(None, &sock, who), Some(pid));
        assert_eq!(vmm_pid(Some(impostor.pid), &sock, who), Some(pid));
        for _ in 0..20 {
            assert_eq!(vmms_under(dir.path(), who), vec![(pid, sock.clone())]);
        }
        assert_eq!(vmm_pid(Some(pid), &vm_dir.join("other.sock"), who), None);

        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(&vm_dir, &alias).unwrap();
        assert_eq!(vmm_pid(None, &alias.join("api.sock"), who), Some(pid));

        let other = vec![file_id(&std::env::current_exe().unwrap()).unwrap()];
        assert_eq!(vmm_pid(Some(pid), &sock, VmmIdentity::ours(&other)), None);
        let stranger = VmmIdentity {
            exes: &exes,
            uid: nix::unistd::geteuid().as_raw() + 1,
        };
        assert_eq!(vmm_pid(Some(pid), &sock, stranger), None);
        assert!(vmms_under(dir.path(), stranger).is_empty());

        signal(pid, Signal::SIGKILL).unwrap();
        assert!(wait_exit(pid, Duration::from_secs(5)));
        assert!(!is_alive(pid));
        assert_eq!(vmm_pid(Some(pid), &sock, who), None);
        assert_eq!(vmm_pid(Some(impostor.pid), &sock, who), None);
        assert!(vmms_under(dir.path(), who).is_empty());
        signal(pid, Signal::SIGTERM).unwrap();
    }

    #[test]
    fn a_vmm_whose_socket_file_is_gone_is_found_under_the_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        let vm_dir = dir.path().join("0123456789");
        std::fs::create_dir(&vm_dir).unwrap();
        let sock = vm_dir.join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let vmm = FakeVmm::spawn(Some(&listener), &[]);
        drop(listener);
        std::fs::remove_dir_all(&vm_dir).unwrap();
        let exes = shell();
        let who = VmmIdentity::ours(&exes);
        assert_eq!(vmms_under(dir.path(), who), vec![(vmm.pid, sock.clone())]);
        assert_eq!(vmm_pid(Some(vmm.pid), &sock, who), None);
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(vmms_under(elsewhere.path(), who).is_empty());
    }

    #[test]
    fn forked_children_of_a_vmm_are_not_vmms() {
        let vmm = |pid, ppid, sock: &str| Candidate {
            pid,
            ppid,
            bound: vec![sock.into()],
        };
        let found = without_forks(vec![
            vmm(100, 1, "/run/banger/a/api.sock"),
            vmm(101, 100, "/run/banger/a/api.sock"),
            vmm(200, 100, "/run/banger/b/api.sock"),
            vmm(300, 1, "/run/banger/c/api.sock"),
        ]);
        let pids: Vec<u32> = found.iter().map(|c| c.pid).collect();
        assert_eq!(pids, vec![100, 200, 300]);
    }

    #[test]
    fn zombie_counts_as_exited() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let vmm = FakeVmm::spawn(Some(&listener), &[]);
        drop(listener);
        let exes = shell();
        let who = VmmIdentity::ours(&exes);
        let pid = vmm.pid;
        assert!(!wait_exit(pid, Duration::from_millis(30)));
        signal(pid, Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while process(pid).is_some_and(|p| is_running(&p)) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        assert!(process(pid).is_some(), "an unreaped child stays in /proc");
        assert_eq!(vmm_pid(Some(pid), &sock, who), None);
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
        let exes = shell();
        let who = VmmIdentity::ours(&exes);
        assert_eq!(
            vmm_pid(Some(0), Path::new("/nonexistent/api.sock"), who),
            None
        );
    }
}
