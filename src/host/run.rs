//! Running host programs to completion: output captured, and a failure turned
//! into one error type naming the command, its exit status and the end of its
//! stderr, or, when the program is missing, the Debian package that has it.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};

use super::ssh::shell_quote;

/// Lines of a failed program's stderr kept in its error.
const TAIL_LINES: usize = 15;
/// Arguments shown in an error; the rest are counted.
const SHOWN_ARGS: usize = 16;
/// Characters of one argument shown in an error.
const ARG_CHARS: usize = 96;

/// Why a host program did not run to a successful end.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `{command}`{}", install_hint(*package, source))]
    Spawn {
        program: String,
        /// The command line, shortened for reading.
        command: String,
        /// The Debian package that provides `program`, when known.
        package: Option<&'static str>,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}) running `{command}`{}", colon(stderr))]
    Failed {
        program: String,
        /// The command line, shortened for reading.
        command: String,
        status: ExitStatus,
        /// The last lines of its stderr (of its stdout if stderr was empty).
        stderr: String,
    },
}

fn install_hint(package: Option<&str>, source: &io::Error) -> String {
    match (source.kind(), package) {
        (io::ErrorKind::NotFound, Some(package)) => {
            format!("; is it installed (Debian package {package})?")
        }
        (io::ErrorKind::NotFound, None) => "; is it installed?".to_owned(),
        _ => String::new(),
    }
}

fn colon(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

impl RunError {
    /// The [`RunError::Failed`] of `cmd` having finished with `output`, for
    /// callers that judge the exit status themselves.
    pub fn failed(cmd: &Command, output: &Output) -> Self {
        let text = if output.stderr.trim_ascii().is_empty() {
            &output.stdout
        } else {
            &output.stderr
        };
        RunError::Failed {
            program: program_name(cmd),
            command: command_line(cmd),
            status: output.status,
            stderr: tail(&String::from_utf8_lossy(text), TAIL_LINES),
        }
    }
}

/// Runs `cmd` to completion in the C locale with stdin from `/dev/null` and
/// its output captured. A non-zero exit is [`RunError::Failed`].
pub fn run(cmd: &mut Command) -> Result<Output, RunError> {
    checked(cmd, None)
}

/// [`run`], with `input` fed to the program's stdin.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<Output, RunError> {
    checked(cmd, Some(input))
}

/// [`run`] (with `input` on stdin, if any), but whatever the exit status, the
/// output is returned for the caller to judge; only a program that cannot be
/// started is an error.
pub fn output(cmd: &mut Command, input: Option<&[u8]>) -> Result<Output, RunError> {
    let spawn_error = |cmd: &Command, source| RunError::Spawn {
        program: program_name(cmd),
        command: command_line(cmd),
        package: package_of(cmd.get_program()),
        source,
    };
    cmd.env("LC_ALL", "C")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(source) => return Err(spawn_error(cmd, source)),
    };
    let stdin = child.stdin.take();
    // Feed stdin from a thread while the output is read, so that neither
    // side can fill a pipe and stall the other.
    let waited = std::thread::scope(|scope| {
        if let (Some(data), Some(mut pipe)) = (input, stdin) {
            scope.spawn(move || {
                // The program may exit without reading it all; its status
                // and stderr say why, so a broken pipe is not the error.
                let _ = pipe.write_all(data);
            });
        }
        child.wait_with_output()
    });
    waited.map_err(|source| spawn_error(cmd, source))
}

fn checked(cmd: &mut Command, input: Option<&[u8]>) -> Result<Output, RunError> {
    let output = output(cmd, input)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(RunError::failed(cmd, &output))
    }
}

fn program_name(cmd: &Command) -> String {
    cmd.get_program().to_string_lossy().into_owned()
}

/// `cmd` as a shell would read it, long arguments and long lists cut short.
fn command_line(cmd: &Command) -> String {
    let mut words = vec![shell_quote(&cmd.get_program().to_string_lossy())];
    let args: Vec<&OsStr> = cmd.get_args().collect();
    for arg in args.iter().take(SHOWN_ARGS) {
        let arg = arg.to_string_lossy();
        words.push(if arg.chars().count() > ARG_CHARS {
            let cut: String = arg.chars().take(ARG_CHARS).collect();
            format!("{}…", shell_quote(&cut))
        } else {
            shell_quote(&arg)
        });
    }
    if args.len() > SHOWN_ARGS {
        words.push(format!("… ({} more)", args.len() - SHOWN_ARGS));
    }
    words.join(" ")
}

/// The last `n` non-empty lines of `text`, joined with "; ".
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join("; ")
}

/// The Debian package that ships `program` (a name or a path), for the tools banger runs.
pub fn package_of(program: &OsStr) -> Option<&'static str> {
    let name = Path::new(program).file_name()?.to_str()?;
    Some(match name {
        "mkfs.ext4" | "mke2fs" | "resize2fs" | "debugfs" | "e2fsck" | "dumpe2fs" => "e2fsprogs",
        "dmsetup" => "dmsetup",
        "losetup" => "mount",
        "nft" => "nftables",
        "debootstrap" => "debootstrap",
        "cpio" => "cpio",
        "depmod" | "modinfo" => "kmod",
        "apt-get" | "apt-cache" => "apt",
        "dpkg-deb" => "dpkg",
        "busybox" => "busybox-static",
        "resolvectl" | "systemctl" => "systemd",
        "unshare" => "util-linux",
        "tar" => "tar",
        "cp" => "coreutils",
        "ssh" | "ssh-keygen" => "openssh-client",
        "qemu-system-x86_64" => "qemu-system-x86",
        "lz4" => "lz4",
        "zstd" => "zstd",
        "xz" => "xz-utils",
        "gzip" => "gzip",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn failed_command_reports_its_output() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sh failed"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn a_failure_names_the_command_its_status_and_the_end_of_stderr() {
        let script = "for i in $(seq 1 40); do echo line$i >&2; done; exit 7";
        let err = run(Command::new("sh").args(["-c", script])).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("sh failed (exit status: 7) running `sh -c 'for i in"),
            "{msg}"
        );
        assert!(msg.ends_with(": line26; line27; line28; line29; line30; line31; line32; line33; line34; line35; line36; line37; line38; line39; line40"), "{msg}");
        assert!(matches!(&err, RunError::Failed { status, .. } if status.code() == Some(7)));
    }

    #[test]
    fn stdout_stands_in_for_an_empty_stderr() {
        let err =
            run(Command::new("sh").args(["-c", "echo E: no such suite; exit 1"])).unwrap_err();
        assert!(err.to_string().ends_with(": E: no such suite"), "{err}");
    }

    #[test]
    fn long_command_lines_are_shortened() {
        let long = "x".repeat(500);
        let many: Vec<String> = (0..40).map(|i| i.to_string()).collect();
        let mut cmd = Command::new("false");
        cmd.arg(&long).args(&many);
        let line = command_line(&cmd);
        assert!(
            line.starts_with(&format!("false {}…", "x".repeat(ARG_CHARS))),
            "{line}"
        );
        assert!(line.ends_with(" 14 … (25 more)"), "{line}");
        assert!(line.len() < 200, "{line}");
    }

    #[test]
    fn a_missing_program_names_its_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = run(Command::new("mkfs.ext4")
            .arg("/x")
            .env("PATH", empty.path()))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot run `mkfs.ext4 /x`; is it installed (Debian package e2fsprogs)?"
        );
        let err = run(&mut Command::new("/nonexistent/banger-tool")).unwrap_err();
        assert!(
            matches!(err, RunError::Spawn { package: None, .. }),
            "{err}"
        );
        assert!(err.to_string().ends_with("; is it installed?"), "{err}");
        assert_eq!(package_of(OsStr::new("/usr/sbin/dmsetup")), Some("dmsetup"));
        assert_eq!(package_of(OsStr::new("apt-cache")), Some("apt"));
    }

    #[test]
    fn input_is_fed_and_output_kept_whatever_the_status() {
        let out = run_with_input(&mut Command::new("cat"), b"hello").unwrap();
        assert_eq!(out.stdout, b"hello");
        // More than a pipe holds, echoed back: neither side may stall.
        let big = vec![b'a'; 1 << 20];
        let out = run_with_input(&mut Command::new("cat"), &big).unwrap();
        assert_eq!(out.stdout.len(), big.len());
        let out = output(
            Command::new("sh").args(["-c", "echo $LC_ALL; exit 2"]),
            None,
        )
        .unwrap();
        assert_eq!(
            (out.status.code(), out.stdout.as_slice()),
            (Some(2), &b"C\n"[..])
        );
    }
}
