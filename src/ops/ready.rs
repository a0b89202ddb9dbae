//! Waiting until a started VM answers: the guest agent over vsock and SSH
//! on port 22; then its host key is pinned. Progress shows on stderr (a
//! spinner on a terminal, a line every 10 s otherwise); a wait that fails
//! says why as a [`NotReady`].

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use super::diagnose::{self, Evidence, LogMark};
use super::interrupt;
use crate::host::{ssh, vsock};
use crate::state::files;
use crate::state::model::{Vm, VmmChoice, VmmKind};
use crate::state::parse::format_duration;
use crate::vm::vmm_choice::{self, PROBE_BOUND};
use crate::vm::{Ctx, LockedVm, Timings, VmFiles, VmRead};

/// How often a wait that is not on a terminal says it is still waiting.
const PIPE_EVERY: Duration = Duration::from_secs(10);

/// Why a wait ended without the guest answering.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("VM {name} stopped while booting")]
    Stopped { name: String },
    #[error("VM {name} did not become ready within {timeout} ({problem})")]
    TimedOut {
        name: String,
        timeout: String,
        problem: String,
    },
    #[error("interrupted by {signal} while waiting for VM {name}")]
    Interrupted {
        name: String,
        signal: nix::sys::signal::Signal,
    },
    #[error(
        "Firecracker cannot run VM {name}'s guest on this host: {detail}. QEMU's software CPU \
         can: `--vmm qemu` for one VM, or `vmm = \"auto\"` in the config, which falls back by itself"
    )]
    HostCannotRun { name: String, detail: String },
    #[error(
        "host key mismatch: VM {name}'s guest presents the SSH host key {presented}, not the \
         one banger made for it and pinned ({pinned}); refusing to trust it"
    )]
    HostKeyMismatch {
        name: String,
        presented: String,
        pinned: String,
    },
}

/// What became of a VM whose wait failed, for the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// It was kept; `running` says whether its VMM still runs.
    Kept { running: bool },
    /// `vm run --rm` deleted it.
    Deleted,
}

/// The error to show for a failed wait: a [`NotReady`] completed with what
/// became of the VM (never "left running" about one that is not), then
/// `evidence` (the logs' last lines and the likely cause, see
/// [`super::diagnose`]) on the lines below; any other error as it is.
pub fn failure(err: anyhow::Error, name: &str, left: Left, evidence: &str) -> anyhow::Error {
    if err.downcast_ref::<NotReady>().is_none() {
        return err;
    }
    let rest = match left {
        Left::Kept { running: true } => format!("it is left running: see `banger vm logs {name}`"),
        Left::Kept { running: false } => {
            format!("it is stopped: see `banger vm logs {name}` and `banger vm logs {name} --vmm`")
        }
        Left::Deleted => format!("VM {name} was deleted (--rm)"),
    };
    let evidence = evidence.trim_end();
    if evidence.is_empty() {
        anyhow!("{err}; {rest}")
    } else {
        anyhow!("{err}; {rest}\n{evidence}")
    }
}

/// Waits until the guest agent answers over vsock and port 22 accepts, then
/// pins the host key the agent reports. Leaves the VM running on timeout.
/// Ends early, as [`NotReady::Interrupted`], on a signal caught by
/// [`interrupt::catch`].
///
/// A guest under Firecracker that prints nothing on its console within
/// [`PROBE_BOUND`] (or whose VMM exits first) on a host kernel where banger
/// has not yet seen one print makes a finding (see [`vmm_choice`]): the VM
/// is stopped and, under `auto`, started again under QEMU in the same wait;
/// otherwise the wait fails as [`NotReady::HostCannotRun`]. Returns the VM
/// as it now is (its `vmm` may have changed).
pub fn wait(ctx: &Ctx, vm: &Vm, timeout: Option<Duration>, timings: &mut Timings) -> Result<Vm> {
    let err = match wait_once(ctx, vm, timeout, timings) {
        Ok(()) => return Ok(vm.clone()),
        Err(err) if !host_cannot_run(&err) => return Err(err),
        Err(err) => err,
    };
    let mut locked = LockedVm::open(ctx, vm.name.as_str())?;
    if locked.vm().id != vm.id {
        // Deleted and its name reused meanwhile: not ours to restart.
        return Err(err);
    }
    fall_back(ctx, &mut locked, err, timeout, timings)
}

/// [`wait`] for a VM whose lock the caller holds (`vm start` keeps it for
/// the whole wait).
pub fn wait_holding(
    ctx: &Ctx,
    locked: &mut LockedVm<'_>,
    timeout: Option<Duration>,
    timings: &mut Timings,
) -> Result<Vm> {
    let vm = locked.vm().clone();
    match wait_once(ctx, &vm, timeout, timings) {
        Ok(()) => Ok(vm),
        Err(err) if !host_cannot_run(&err) => Err(err),
        Err(err) => fall_back(ctx, locked, err, timeout, timings),
    }
}

fn host_cannot_run(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<NotReady>(),
        Some(NotReady::HostCannotRun { .. })
    )
}

/// After `err` (a [`NotReady::HostCannotRun`]): stops the VM and, under
/// `auto`, starts it under QEMU and waits again; else returns `err`.
fn fall_back(
    ctx: &Ctx,
    locked: &mut LockedVm<'_>,
    err: anyhow::Error,
    timeout: Option<Duration>,
    timings: &mut Timings,
) -> Result<Vm> {
    locked.stop(Duration::ZERO, true)?;
    let vm = locked.vm().clone();
    let Some(NotReady::HostCannotRun { detail, .. }) = err.downcast_ref::<NotReady>() else {
        return Err(err);
    };
    if vm.vmm_choice.unwrap_or(ctx.config.vmm) != VmmChoice::Auto {
        return Err(err);
    }
    eprintln!(
        "VM {}: Firecracker cannot run guests on this host ({detail}); starting it under QEMU",
        vm.name
    );
    locked.start(timings)?;
    let vm = locked.read().vm;
    wait_once(ctx, &vm, timeout, timings)?;
    Ok(vm)
}

fn wait_once(ctx: &Ctx, vm: &Vm, timeout: Option<Duration>, timings: &mut Timings) -> Result<()> {
    let timeout = timeout.unwrap_or(ctx.config.wait_timeout);
    let mut progress = Progress::new(vm.name.as_str(), timeout);
    let result = timings.time("ready", || wait_for_guest(ctx, vm, timeout, &mut progress));
    progress.finish();
    result
}

/// Whether this run's guest has printed on its console yet, for a run that
/// must show it (see [`vmm_choice::PROBE_BOUND`]).
struct Probe {
    started: Instant,
    mark: LogMark,
}

impl Probe {
    /// `None` when the run needs no probe.
    fn of(read: &VmRead) -> Option<Self> {
        let handles = &read.observed.handles;
        (handles.probe && handles.vmm == Some(VmmKind::Firecracker)).then(|| Self {
            started: Instant::now(),
            mark: LogMark::of_run(handles),
        })
    }

    /// `Ok(true)` once the guest printed (recorded: Firecracker runs guests
    /// here), `Ok(false)` while it may still, else the finding that it
    /// cannot (recorded too).
    fn check(&self, ctx: &Ctx, vm: &Vm, running: bool) -> Result<bool> {
        let evidence = Evidence::read(ctx, vm, self.mark);
        if !evidence.guest_lines().is_empty() {
            vmm_choice::record(ctx, true, "a guest printed on its console")?;
            return Ok(true);
        }
        let elapsed = self.started.elapsed();
        if running && elapsed < PROBE_BOUND {
            return Ok(false);
        }
        let mut detail = if running {
            format!(
                "its guest printed nothing on the console within {}",
                format_duration(PROBE_BOUND)
            )
        } else {
            "the VMM exited before its guest printed anything".to_owned()
        };
        if let Some(error) = diagnose::kvm_error(&evidence.vmm_log) {
            detail.push_str(&format!(" and the VMM reports {error}"));
        }
        vmm_choice::record(ctx, false, &detail)?;
        Err(NotReady::HostCannotRun {
            name: vm.name.to_string(),
            detail,
        }
        .into())
    }
}

/// What the wait is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Agent,
    Ssh,
}

/// The spinner's text: `VM x: waiting for the agent (12s of 5m)`.
pub fn spinner_text(name: &str, stage: Stage, elapsed: Duration, timeout: Duration) -> String {
    let what = match stage {
        Stage::Agent => "waiting for the agent",
        Stage::Ssh => "waiting for SSH",
    };
    format!(
        "VM {name}: {what} ({} of {})",
        format_duration(elapsed),
        format_duration(timeout)
    )
}

/// The line printed every 10 s off a terminal:
/// `waiting for VM x: agent not answering yet (20s of 5m)`.
pub fn pipe_line(name: &str, stage: Stage, elapsed: Duration, timeout: Duration) -> String {
    let what = match stage {
        Stage::Agent => "agent",
        Stage::Ssh => "SSH",
    };
    format!(
        "waiting for VM {name}: {what} not answering yet ({} of {})",
        format_duration(elapsed),
        format_duration(timeout)
    )
}

/// Progress on stderr: a spinner on a terminal, else a line every 10 s.
struct Progress<'a> {
    name: &'a str,
    timeout: Duration,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
    lines: u32,
}

impl<'a> Progress<'a> {
    fn new(name: &'a str, timeout: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(spinner_text(name, Stage::Agent, Duration::ZERO, timeout));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            name,
            timeout,
            started: Instant::now(),
            bar,
            lines: 0,
        }
    }

    fn update(&mut self, stage: Stage) {
        let elapsed = self.started.elapsed();
        match &self.bar {
            Some(bar) => bar.set_message(spinner_text(self.name, stage, elapsed, self.timeout)),
            None => {
                let due = PIPE_EVERY * (self.lines + 1);
                if elapsed >= due {
                    eprintln!("{}", pipe_line(self.name, stage, due, self.timeout));
                    self.lines += 1;
                }
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

fn wait_for_guest(ctx: &Ctx, vm: &Vm, timeout: Duration, progress: &mut Progress) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let uds = ctx.paths.vsock_uds(&vm.id);
    let ssh_addr = SocketAddr::from((vm.ip, 22));
    let name = vm.name.to_string();
    let mut last_problem = String::from("no answer yet");
    let mut stage = Stage::Agent;
    let mut probe = Probe::of(&VmRead::observe(ctx, vm.clone()));
    // The host key banger made for the VM at create, if it made one.
    let pinned = files::read_text_bounded(&VmFiles::of(&ctx.paths, vm).host_key_pub, 4096)
        .ok()
        .map(|text| text.trim().to_owned());
    while Instant::now() < deadline {
        if let Some(signal) = interrupt::caught() {
            return Err(NotReady::Interrupted { name, signal }.into());
        }
        let running = VmRead::observe(ctx, vm.clone()).observed.pid.is_some();
        if let Some(p) = &probe
            && p.check(ctx, vm, running)?
        {
            probe = None;
        }
        if !running {
            return Err(NotReady::Stopped { name }.into());
        }
        match vsock::ping(&uds, Duration::from_secs(2)) {
            Ok(reply) => {
                stage = Stage::Ssh;
                match (
                    reply.ssh_host_key,
                    TcpStream::connect_timeout(&ssh_addr, Duration::from_secs(1)),
                ) {
                    (Some(key), Ok(_)) => {
                        let key = match &pinned {
                            Some(pinned) if !ssh::same_key(pinned, &key) => {
                                return Err(NotReady::HostKeyMismatch {
                                    name,
                                    presented: key.trim().to_owned(),
                                    pinned: pinned.trim().to_owned(),
                                }
                                .into());
                            }
                            Some(pinned) => pinned.clone(),
                            // A VM banger made no host key for (its image
                            // does not boot banger's initramfs): trust on
                            // first use.
                            None => key,
                        };
                        let hosts = [vm.ip.to_string(), ctx.dns_name(vm)];
                        ssh::pin_host_key(&ctx.paths.known_hosts(), &hosts, &key)?;
                        return Ok(());
                    }
                    (None, _) => last_problem = "the guest has no SSH host key yet".into(),
                    (_, Err(e)) => last_problem = format!("SSH port: {e}"),
                }
            }
            Err(e) => last_problem = format!("agent: {e}"),
        }
        progress.update(stage);
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(NotReady::TimedOut {
        name,
        timeout: format_duration(timeout),
        problem: last_problem,
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_says_the_stage_the_elapsed_time_and_the_timeout() {
        let five_min = Duration::from_secs(300);
        assert_eq!(
            spinner_text("x", Stage::Agent, Duration::from_secs(12), five_min),
            "VM x: waiting for the agent (12s of 5m)"
        );
        assert_eq!(
            spinner_text("x", Stage::Ssh, Duration::from_secs(75), five_min),
            "VM x: waiting for SSH (1m15s of 5m)"
        );
        assert_eq!(
            pipe_line("x", Stage::Agent, Duration::from_secs(20), five_min),
            "waiting for VM x: agent not answering yet (20s of 5m)"
        );
    }

    #[test]
    fn a_failed_wait_says_what_became_of_the_vm() {
        let timed_out = || {
            anyhow::Error::from(NotReady::TimedOut {
                name: "x".into(),
                timeout: "5s".into(),
                problem: "agent: refused".into(),
            })
        };
        let kept = failure(timed_out(), "x", Left::Kept { running: true }, "").to_string();
        assert_eq!(
            kept,
            "VM x did not become ready within 5s (agent: refused); it is left running: \
             see `banger vm logs x`"
        );
        let deleted = failure(timed_out(), "x", Left::Deleted, "VM x: evidence\n").to_string();
        assert!(!deleted.contains("running"), "{deleted}");
        assert!(
            deleted.ends_with("VM x was deleted (--rm)\nVM x: evidence"),
            "{deleted}"
        );
        let stopped = failure(
            NotReady::Stopped { name: "x".into() }.into(),
            "x",
            Left::Kept { running: false },
            "",
        )
        .to_string();
        assert!(stopped.contains("it is stopped"), "{stopped}");
        let other = failure(anyhow!("disk full"), "x", Left::Deleted, "logs").to_string();
        assert_eq!(other, "disk full");
    }
}
