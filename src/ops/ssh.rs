//! Running the user's OpenSSH in a VM with banger's key and pinned host key.

use std::io::IsTerminal;

use anyhow::{Context, Result};

use crate::host::ssh;
use crate::state::model::Vm;
use crate::vm::Ctx;

/// Runs `command` (or a login shell) in a running VM with the user's OpenSSH,
/// passing stdin/stdout/stderr through; returns its exit code. Ctrl-C reaches
/// the remote side while banger itself keeps going, so `--rm` still cleans up.
pub fn run(ctx: &Ctx, vm: &Vm, command: &[String]) -> Result<i32> {
    let tty = command.is_empty() && std::io::stdin().is_terminal();
    let args = ssh::ssh_args(
        &ctx.paths.ssh_key(),
        &ctx.paths.known_hosts(),
        &vm.ip.to_string(),
        tty,
        command,
    );
    ignore_interrupts_while_child_runs();
    let status = std::process::Command::new("ssh")
        .args(&args)
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
