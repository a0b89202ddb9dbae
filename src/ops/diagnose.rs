//! Why a started VM did not answer: the last lines its VMM logged and its
//! guest printed since that start, and the likely cause named from them.
//! The analysis is pure functions over the texts; [`Evidence::read`] reads
//! the files.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::state::model::Vm;
use crate::vm::{Ctx, VmFiles};

/// How many lines of each log a report shows.
pub const TAIL_LINES: usize = 12;

/// At most this much of each log is read (its end).
const READ_LIMIT: u64 = 256 << 10;

/// Where a VM's logs end before a start: what they hold after it is that
/// start's. Both logs are appended to across starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMark {
    console: u64,
    vmm: u64,
}

impl LogMark {
    /// Where the current run's output begins (recorded in its handles).
    pub fn of_run(handles: &crate::state::handles::Handles) -> Self {
        Self {
            console: handles.console_from,
            vmm: handles.vmm_log_from,
        }
    }

    /// The logs' ends now (a VM about to be started).
    pub fn of(ctx: &Ctx, vm: &Vm) -> Self {
        let files = VmFiles::of(&ctx.paths, vm);
        let len = |path: &Path| std::fs::metadata(path).map_or(0, |m| m.len());
        Self {
            console: len(&files.console_log),
            vmm: len(&files.vmm_log),
        }
    }
}

/// What the VMM logged and the console showed since a [`LogMark`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub name: String,
    /// The VMM's instance id (the VM id): its own lines on the console carry it.
    pub id: String,
    pub vmm_log: String,
    pub console: String,
    /// Whether the VMM still runs.
    pub running: bool,
}

impl Evidence {
    /// Reads both logs since `mark` and whether the VMM is alive.
    pub fn read(ctx: &Ctx, vm: &Vm, mark: LogMark) -> Self {
        let files = VmFiles::of(&ctx.paths, vm);
        Self {
            name: vm.name.to_string(),
            id: vm.id.to_string(),
            vmm_log: read_since(&files.vmm_log, mark.vmm),
            console: read_since(&files.console_log, mark.console),
            running: crate::vm::VmRead::observe(ctx, vm.clone())
                .observed
                .pid
                .is_some(),
        }
    }

    /// The lines the guest printed (the console without the VMM's own lines).
    pub fn guest_lines(&self) -> Vec<&str> {
        guest_lines(&self.console, &self.id)
    }

    pub fn cause(&self) -> Option<Cause> {
        cause(&self.vmm_log, &self.guest_lines(), self.running)
    }

    /// What to show under the error `err` of a failed wait: the logs and
    /// the likely cause, or only the logs when the error is the cause
    /// (Firecracker found unable to run guests here).
    pub fn under(&self, err: &anyhow::Error) -> String {
        match err.downcast_ref::<super::ready::NotReady>() {
            Some(super::ready::NotReady::HostCannotRun { .. }) => self.logs().to_string(),
            _ => self.to_string(),
        }
    }
}

/// The end of `path` from byte `from` on (at most [`READ_LIMIT`]); empty
/// when it cannot be read.
fn read_since(path: &Path, from: u64) -> String {
    let Ok(mut file) = crate::state::files::open_regular(path) else {
        return String::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = if len < from {
        0 // truncated or replaced: all of it is new
    } else {
        from.max(len.saturating_sub(READ_LIMIT))
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The console's lines that are the guest's: not blank, not the VMM's own
/// (Firecracker's and banger-vmm-qemu's log lines carry `[<id>:`,
/// Firecracker's exit error is `Error: RunWithApi(…)`).
pub fn guest_lines<'a>(console: &'a str, id: &str) -> Vec<&'a str> {
    let own = format!("[{id}:");
    console
        .lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| {
            !line.trim().is_empty() && !line.contains(own.as_str()) && !is_vmm_exit_error(line)
        })
        .collect()
}

/// Firecracker's last words on stderr: `Error: ` and a Rust debug value.
fn is_vmm_exit_error(line: &str) -> bool {
    line.strip_prefix("Error: ").is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_uppercase()) && !rest.contains(' ')
    })
}

/// The likely reason a guest never answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The guest printed nothing and the VMM reports a KVM failure.
    KvmCannotRun { error: String },
    /// The guest kernel panicked (the line that says so).
    KernelPanic { line: String },
    /// The guest printed nothing and the VMM is gone.
    SilentExit,
    /// The guest printed nothing, the VMM still runs.
    Silent,
    /// The guest printed, but its agent never answered.
    AgentSilent,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KvmCannotRun { error } => write!(
                f,
                "this host's KVM cannot run this guest: the guest printed nothing and the \
                 VMM reports {error:?} (nested virtualization? run `banger doctor --boot`)"
            ),
            Self::KernelPanic { line } => write!(f, "the guest kernel panicked: {line}"),
            Self::SilentExit => write!(
                f,
                "the VMM exited before the guest printed anything (run `banger doctor --boot`)"
            ),
            Self::Silent => write!(
                f,
                "the guest printed nothing: its kernel did not start on this host \
                 (run `banger doctor --boot`)"
            ),
            Self::AgentSilent => write!(
                f,
                "the guest booted but its agent never answered (see the console lines above)"
            ),
        }
    }
}

/// Names the likely cause from the VMM's log, the guest's console lines and
/// whether the VMM still runs; `None` when the texts say nothing useful.
pub fn cause(vmm_log: &str, guest: &[&str], running: bool) -> Option<Cause> {
    if let Some(line) = guest.iter().find(|l| l.contains("Kernel panic")) {
        return Some(Cause::KernelPanic {
            line: line.trim().to_owned(),
        });
    }
    if guest.is_empty() {
        if let Some(error) = kvm_error(vmm_log) {
            return Some(Cause::KvmCannotRun { error });
        }
        return Some(if running {
            Cause::Silent
        } else {
            Cause::SilentExit
        });
    }
    running.then_some(Cause::AgentSilent)
}

/// The KVM failure a VMM log reports (`KVM_EXIT_INTERNAL_ERROR`, a failed
/// `KVM_RUN`, …): the first such name, else `None`.
pub fn kvm_error(vmm_log: &str) -> Option<String> {
    vmm_log
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find_map(|word| {
            (word.starts_with("KVM_EXIT_") || word == "KVM_RUN").then(|| word.to_owned())
        })
}

/// The last `n` non-blank lines of `text`.
pub fn tail(text: &str, n: usize) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

impl Evidence {
    /// Both logs' last lines without a cause: for a start that failed
    /// before the guest could run (the error says why).
    pub fn logs(&self) -> impl fmt::Display + '_ {
        Logs(self)
    }
}

struct Logs<'a>(&'a Evidence);

impl fmt::Display for Logs<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Logs(evidence) = self;
        let name = &evidence.name;
        let vmm = tail(&evidence.vmm_log, TAIL_LINES);
        if vmm.is_empty() {
            writeln!(f, "VM {name}: the VMM logged nothing")?;
        } else {
            writeln!(f, "VM {name}: the VMM's last log lines:")?;
            for line in vmm {
                writeln!(f, "  | {line}")?;
            }
        }
        let guest = evidence.guest_lines();
        if guest.is_empty() {
            writeln!(f, "VM {name}: the guest printed nothing on its console")?;
        } else {
            writeln!(f, "VM {name}: the guest console's last lines:")?;
            for line in &guest[guest.len().saturating_sub(TAIL_LINES)..] {
                writeln!(f, "  | {line}")?;
            }
        }
        Ok(())
    }
}

/// The report printed on stderr when a VM did not become ready: both logs'
/// last lines and the likely cause.
impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.logs())?;
        if let Some(cause) = self.cause() {
            writeln!(f, "VM {}: likely cause: {cause}", self.name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789";
    const FC_CONSOLE: &str =
        "2025-01-01T00:00:00.000000000 [0123456789:main] Running Firecracker v1.12.1\n";
    const FC_KVM_LOG: &str = "2025-01-01T00:00:01.0 [0123456789:main] Artificially kick devices.\n\
        2025-01-01T00:00:44.0 [0123456789:fc_vcpu 0] Failure in the Vcpu state: \
        FaultyKvmExit(\"Unexpected kvm exit reason: KVM_EXIT_INTERNAL_ERROR\")\n\
        2025-01-01T00:00:44.1 [0123456789:main] Vmm is stopping.\n";

    fn evidence(vmm_log: &str, console: &str, running: bool) -> Evidence {
        Evidence {
            name: "x".into(),
            id: ID.into(),
            vmm_log: vmm_log.into(),
            console: console.into(),
            running,
        }
    }

    #[test]
    fn the_vmm_s_own_console_lines_are_not_the_guest_s() {
        let console = format!(
            "{FC_CONSOLE}[{ID}:banger-vmm-qemu:INFO] serving /x\n\n[    0.000000] Linux version 6.1\n"
        );
        assert_eq!(
            guest_lines(&console, ID),
            ["[    0.000000] Linux version 6.1"]
        );
    }

    #[test]
    fn a_silent_guest_and_a_kvm_error_blame_the_host_s_kvm() {
        let cause = evidence(FC_KVM_LOG, FC_CONSOLE, false).cause();
        assert_eq!(
            cause,
            Some(Cause::KvmCannotRun {
                error: "KVM_EXIT_INTERNAL_ERROR".into()
            })
        );
        let text = cause.unwrap().to_string();
        assert!(
            text.contains("KVM cannot run this guest") && text.contains("nested virtualization?")
        );
        assert!(text.contains("banger doctor --boot"), "{text}");
    }

    #[test]
    fn firecracker_on_a_host_whose_kvm_cannot_run_the_guest() {
        // As a real Firecracker v1.12 logged it here, 85 s after InstanceStart.
        let vmm_log = "2026-12-01T10:28:04.320042900 [b13d3042b1:main:INFO] Artificially kick devices.\n\
            2026-12-01T10:29:29.249570584 [b13d3042b1:fc_vcpu 0:ERROR] Received KVM_EXIT_INTERNAL_ERROR signal\n\
            2026-12-01T10:29:29.276847361 [b13d3042b1:main:ERROR] Firecracker exiting with error. exit_code=1\n";
        let console = "Error: RunWithApi(MicroVMStoppedWithError(GenericError))\n";
        let guest = guest_lines(console, "b13d3042b1");
        assert!(guest.is_empty(), "{guest:?}");
        assert_eq!(
            cause(vmm_log, &guest, false),
            Some(Cause::KvmCannotRun {
                error: "KVM_EXIT_INTERNAL_ERROR".into()
            })
        );
        assert_eq!(
            guest_lines("Error: no such file\n", ID),
            ["Error: no such file"]
        );
    }

    #[test]
    fn a_kernel_panic_on_the_console_is_named() {
        let console = "[    1.2] VFS: Cannot open root device\n\
            [    1.3] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n";
        assert_eq!(
            cause("", &guest_lines(console, ID), false),
            Some(Cause::KernelPanic {
                line: "[    1.3] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)".into()
            })
        );
    }

    #[test]
    fn silence_is_told_apart_by_whether_the_vmm_lives() {
        assert_eq!(cause("", &[], true), Some(Cause::Silent));
        assert_eq!(cause("", &[], false), Some(Cause::SilentExit));
        assert_eq!(cause("", &["login:"], true), Some(Cause::AgentSilent));
        assert_eq!(cause("", &["reboot: Power down"], false), None);
    }

    #[test]
    fn the_report_shows_both_tails_and_the_cause() {
        let text = evidence(FC_KVM_LOG, FC_CONSOLE, false).to_string();
        assert!(
            text.contains("VM x: the VMM's last log lines:\n  | 2025"),
            "{text}"
        );
        assert!(text.contains("KVM_EXIT_INTERNAL_ERROR"), "{text}");
        assert!(
            text.contains("VM x: the guest printed nothing on its console"),
            "{text}"
        );
        assert!(
            text.contains("VM x: likely cause: this host's KVM"),
            "{text}"
        );
        let logs = evidence(FC_KVM_LOG, FC_CONSOLE, false).logs().to_string();
        assert!(
            !logs.contains("likely cause") && logs.contains("Vmm is stopping"),
            "{logs}"
        );
        let empty = evidence("", "", true).to_string();
        assert!(
            empty.starts_with("VM x: the VMM logged nothing\n"),
            "{empty}"
        );
    }

    #[test]
    fn tails_keep_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let last = tail(&text, 3);
        assert_eq!(last, ["line 28", "line 29", "line 30"]);
    }

    #[test]
    fn reads_only_what_follows_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "old boot\n").unwrap();
        let mark = std::fs::metadata(&path).unwrap().len();
        std::fs::write(&path, "old boot\nnew boot\n").unwrap();
        assert_eq!(read_since(&path, mark), "new boot\n");
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(
            read_since(&path, 100),
            "short\n",
            "a shorter file is all new"
        );
        assert_eq!(read_since(&dir.path().join("none"), 0), "");
    }
}
