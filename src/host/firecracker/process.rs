//! The Firecracker process: finding the binary, spawning it detached,
//! waiting for its API socket, and stopping it.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::api::{self, ApiClient};
use crate::host::procs::{self, ProcError};
use crate::host::run::{self, RunError};

/// Where Firecracker releases are published.
pub const RELEASES_URL: &str = "https://github.com/firecracker-microvm/firecracker/releases";

/// How long a VMM gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// How long the kernel gets to tear a VMM down after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often [`wait_for_socket`] retries: a connect attempt is cheap, and
/// the socket appears within milliseconds of the spawn.
const SOCKET_POLL: Duration = Duration::from_millis(1);

#[derive(Debug, thiserror::Error)]
pub enum FcError {
    #[error(
        "Firecracker not found: {looked}; download it from {RELEASES_URL} and set \
         `firecracker` in the config, BANGER_FIRECRACKER, or put it on PATH"
    )]
    NotFound { looked: String },
    #[error(transparent)]
    Version(#[from] RunError),
    #[error("unexpected output from `{} --version`: {output:?}", bin.display())]
    VersionOutput { bin: PathBuf, output: String },
    #[error("cannot remove the stale API socket {}", path.display())]
    StaleSocket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the console log {}", path.display())]
    ConsoleLog {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Spawn(#[from] ProcError),
    #[error("cannot make the VMM's socket {} private", path.display())]
    SocketMode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the VMM (pid {pid}) exited before its API socket {} appeared; its console log says why",
        sock.display()
    )]
    Exited { pid: u32, sock: PathBuf },
    #[error(
        "the VMM (pid {pid}) did not open its API socket {} within {timeout:?}",
        sock.display()
    )]
    SocketTimeout {
        pid: u32,
        sock: PathBuf,
        timeout: Duration,
    },
}

/// The Firecracker binary: `configured` (banger's config) if given, else
/// `$BANGER_FIRECRACKER`, else `firecracker` on `$PATH`.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, FcError> {
    locate(
        configured,
        crate::env::Env::get()
            .firecracker
            .clone()
            .map(OsString::from),
        std::env::var_os("PATH"),
    )
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

fn locate(
    configured: Option<&Path>,
    env: Option<OsString>,
    path_var: Option<OsString>,
) -> Result<PathBuf, FcError> {
    let explicit = |path: PathBuf, source: &str| {
        if is_executable(&path) {
            Ok(path)
        } else {
            Err(FcError::NotFound {
                looked: format!("{source} {} is not an executable file", path.display()),
            })
        }
    };
    if let Some(path) = configured {
        return explicit(path.to_owned(), "the configured path");
    }
    if let Some(path) = env.filter(|value| !value.is_empty()) {
        return explicit(PathBuf::from(path), "BANGER_FIRECRACKER");
    }
    let path_var = path_var.unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("firecracker"))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| FcError::NotFound {
            looked: format!(
                "no config path, BANGER_FIRECRACKER unset, and no `firecracker` in PATH ({})",
                path_var.to_string_lossy()
            ),
        })
}

/// `(major, minor, patch)` from the first line of `firecracker --version`.
pub fn version(bin: &Path) -> Result<(u32, u32, u32), FcError> {
    let output = run::output(Command::new(bin).arg("--version"), None)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_version(&stdout).ok_or_else(|| FcError::VersionOutput {
        bin: bin.to_owned(),
        output: format!("{stdout}{}", String::from_utf8_lossy(&output.stderr))
            .trim()
            .to_owned(),
    })
}

/// `Firecracker v1.12.1` → `(1, 12, 1)`; a suffix after the patch number
/// (`1.13.0-dev`) is ignored.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let line = text.lines().find(|line| !line.trim().is_empty())?;
    line.split_whitespace().find_map(|word| {
        let mut parts = word.strip_prefix('v').unwrap_or(word).splitn(3, '.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next()?;
        let digits = patch
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(patch.len());
        Some((major, minor, patch.get(..digits)?.parse().ok()?))
    })
}

/// Starts Firecracker detached in its own session, serving `api_sock`, with
/// stdin from `/dev/null` and stdout and stderr appended to `console_log`.
/// A socket left over at `api_sock` is removed first. Returns the PID.
pub fn spawn(bin: &Path, api_sock: &Path, id: &str, console_log: &Path) -> Result<u32, FcError> {
    match std::fs::remove_file(api_sock) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(FcError::StaleSocket {
                path: api_sock.to_owned(),
                source,
            });
        }
    }
    let console_error = |source| FcError::ConsoleLog {
        path: console_log.to_owned(),
        source,
    };
    let stdout = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(console_log)
        .map_err(console_error)?;
    let stderr = stdout.try_clone().map_err(console_error)?;
    let mut command = Command::new(bin);
    command.arg("--api-sock").arg(api_sock).arg("--id").arg(id);
    Ok(procs::spawn_detached(&mut command, stdout, stderr)?)
}

/// Makes a socket the VMM bound 0600, whatever its umask made it.
pub fn private_socket(sock: &Path) -> Result<(), FcError> {
    std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        FcError::SocketMode {
            path: sock.to_owned(),
            source,
        }
    })
}

/// Waits until Firecracker (`pid`) accepts connections on `sock`. Fails as
/// soon as the process has exited, or after `timeout`.
pub fn wait_for_socket(sock: &Path, pid: u32, timeout: Duration) -> Result<(), FcError> {
    let deadline = Instant::now() + timeout;
    loop {
        if UnixStream::connect(sock).is_ok() {
            return private_socket(sock);
        }
        if procs::wait_exit(pid, Duration::ZERO) {
            return Err(FcError::Exited {
                pid,
                sock: sock.to_owned(),
            });
        }
        if Instant::now() >= deadline {
            return Err(FcError::SocketTimeout {
                pid,
                sock: sock.to_owned(),
                timeout,
            });
        }
        std::thread::sleep(SOCKET_POLL);
    }
}

/// How [`stop_vmm`] ended the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The guest shut down after Ctrl-Alt-Del.
    CtrlAltDel,
    /// The VMM exited on SIGTERM.
    Term,
    /// The VMM was killed.
    Kill,
    /// There was no VMM to stop.
    AlreadyGone,
}

/// Stops the VMM `pid` served through `client`: Ctrl-Alt-Del and up to
/// `timeout` for the guest to shut down, then SIGTERM and 2 s, then SIGKILL.
/// `force` goes straight to SIGKILL. Fails only if a signal cannot be sent or
/// the process outlives SIGKILL.
pub fn stop_vmm(
    client: &ApiClient,
    pid: u32,
    timeout: Duration,
    force: bool,
) -> Result<StopOutcome, ProcError> {
    if procs::wait_exit(pid, Duration::ZERO) {
        return Ok(StopOutcome::AlreadyGone);
    }
    if !force {
        if api::send_ctrl_alt_del(client).is_ok() && procs::wait_exit(pid, timeout) {
            return Ok(StopOutcome::CtrlAltDel);
        }
        procs::signal(pid, Signal::SIGTERM)?;
        if procs::wait_exit(pid, TERM_GRACE) {
            return Ok(StopOutcome::Term);
        }
    }
    procs::signal(pid, Signal::SIGKILL)?;
    if procs::wait_exit(pid, KILL_GRACE) {
        Ok(StopOutcome::Kill)
    } else {
        Err(ProcError::StillAlive { pid })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn version_output_parses() {
        let output = "Firecracker v1.12.1\n\n2026-11-26T15:00:18 [anonymous-instance:main] Firecracker exiting successfully. exit_code=0\n";
        assert_eq!(parse_version(output), Some((1, 12, 1)));
        assert_eq!(parse_version("Firecracker v1.13.0-dev\n"), Some((1, 13, 0)));
        assert_eq!(parse_version("firecracker 1.10.2"), Some((1, 10, 2)));
        assert_eq!(parse_version("Firecracker\n"), None);
        assert_eq!(parse_version("Firecracker v1.12\n"), None);
        assert_eq!(parse_version(""), None);
    }

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn configured_path_wins_over_env_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let configured = executable(dir.path(), "fc-configured");
        let env = executable(dir.path(), "fc-env");
        executable(dir.path(), "firecracker");
        let found = locate(
            Some(&configured),
            Some(env.clone().into()),
            Some(dir.path().into()),
        );
        assert_eq!(found.unwrap(), configured);
        let found = locate(None, Some(env.clone().into()), Some(dir.path().into()));
        assert_eq!(found.unwrap(), env);
    }

    #[test]
    fn path_is_searched_in_order() {
        let first = tempfile::tempdir().unwrap();
        let second = tempfile::tempdir().unwrap();
        std::fs::write(first.path().join("firecracker"), "not executable").unwrap();
        let wanted = executable(second.path(), "firecracker");
        let path_var = std::env::join_paths([first.path(), second.path()]).unwrap();
        assert_eq!(
            locate(None, Some(OsString::new()), Some(path_var)).unwrap(),
            wanted
        );
    }

    #[test]
    fn missing_binary_says_where_it_looked_and_where_to_get_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("firecracker");
        let error = locate(Some(&missing), None, None).unwrap_err().to_string();
        assert!(error.contains(&missing.display().to_string()), "{error}");
        assert!(error.contains(RELEASES_URL), "{error}");

        let error = locate(None, Some(missing.clone().into()), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("BANGER_FIRECRACKER"), "{error}");

        let error = locate(None, None, Some(dir.path().into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no `firecracker` in PATH"), "{error}");
        assert!(error.contains(&dir.path().display().to_string()), "{error}");
    }
}
