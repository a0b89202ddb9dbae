//! Running the user's OpenSSH in a VM with banger's key and pinned host key.

use std::io::IsTerminal;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::host::ssh;
use crate::state::model::{Vm, VmName};
use crate::vm::{Ctx, VmRead};

/// The named VM if it is running and its host key is pinned (waiting for
/// it first, up to a minute, when it was created with `--no-wait`).
pub fn running(ctx: &Ctx, name: &VmName) -> Result<Vm> {
    let read = VmRead::observe_named(ctx, name.as_str())?;
    if read.observed.pid.is_none() {
        bail!("VM {name} is stopped; start it with `banger vm start {name}`");
    }
    if !ssh::is_pinned(&ctx.paths.known_hosts(), &read.vm.ip.to_string()) {
        return super::ready::wait(
            ctx,
            &read.vm,
            Some(Duration::from_secs(60)),
            &mut ctx.timings(),
        );
    }
    Ok(read.vm)
}

/// `ssh` to a VM with banger's key and pinned `known_hosts`, running
/// `command` (a login shell when empty; `tty` asks for a terminal).
pub fn command(ctx: &Ctx, vm: &Vm, tty: bool, command: &[String]) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(ssh::ssh_args(
        &ctx.paths.ssh_key(),
        &ctx.paths.known_hosts(),
        &vm.ip.to_string(),
        tty,
        command,
    ));
    cmd
}

/// Runs `command` (or a login shell) in a running VM with the user's OpenSSH,
/// passing stdin/stdout/stderr through; returns its exit code. Ctrl-C reaches
/// the remote side while banger itself keeps going, so `--rm` still cleans up.
pub fn run(ctx: &Ctx, vm: &Vm, command: &[String]) -> Result<i32> {
    let tty = command.is_empty() && std::io::stdin().is_terminal();
    let mut ssh = self::command(ctx, vm, tty, command);
    ignore_interrupts_while_child_runs();
    let status = ssh
        .status()
        .context("cannot run `ssh` (install OpenSSH's client)")?;
    let code = status.code().unwrap_or(130);
    if code == 255 {
        // OpenSSH's own failure (the remote side cannot return 255 through
        // it unambiguously, but this is by far the likelier cause).
        eprintln!(
            "banger: ssh to VM {0} failed; if its host key changed (it was rebuilt), \
             `banger vm restart {0}` pins the key its agent reports",
            vm.name
        );
    }
    Ok(code)
}

extern "C" fn on_interrupt(_: libc::c_int) {}

/// Installs a no-op SIGINT/SIGQUIT handler (reset to default in the exec'd
/// child, unlike SIG_IGN) so banger outlives a Ctrl-C aimed at ssh.
fn ignore_interrupts_while_child_runs() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_interrupt),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: the handler does nothing, so it is async-signal-safe.
        unsafe { sigaction(signal, &action) }.ok();
    }
}
