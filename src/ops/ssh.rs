//! Running the user's OpenSSH in a VM with banger's key and pinned host key.

use std::io::IsTerminal;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::host::ssh;
use crate::state::model::{Vm, VmName, VmmKind};
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
    command_with(ctx, vm, &[], tty, command)
}

/// [`command`] with more OpenSSH `options` (`-o Name=value` pairs), which
/// take precedence over banger's.
pub fn command_with(
    ctx: &Ctx,
    vm: &Vm,
    options: &[&str],
    tty: bool,
    command: &[String],
) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(options);
    // A pool VM has a connection open already (see [`open_master`]).
    let control = ctx.paths.ssh_control(&vm.id);
    if ssh::has_master(&control) {
        cmd.args(ssh::mux_args(&control));
    }
    cmd.args(ssh::ssh_args(
        &ctx.paths.ssh_key(),
        &ctx.paths.known_hosts(),
        &vm.ip.to_string(),
        connect_timeout(vm),
        tty,
        command,
    ));
    cmd
}

/// Opens a connection master to `vm` (authenticated once, kept in the
/// background, closed when the VM's runtime is torn down) that later `ssh`
/// sessions to it go through: a warm pool VM's first session then costs no
/// key exchange or authentication.
pub fn open_master(ctx: &Ctx, vm: &Vm) -> Result<()> {
    let control = ctx.paths.ssh_control(&vm.id);
    let mut ssh = Command::new("ssh");
    ssh.args(ssh::master_args(&control)).args(ssh::ssh_args(
        &ctx.paths.ssh_key(),
        &ctx.paths.known_hosts(),
        &vm.ip.to_string(),
        connect_timeout(vm),
        false,
        &[],
    ));
    quietly(ssh).with_context(|| format!("cannot open an SSH connection to VM {}", vm.name))
}

/// Runs an `ssh` with no input and its output discarded; an error carries
/// what it said on stderr.
pub fn quietly(mut ssh: Command) -> Result<()> {
    let output = ssh
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .context("cannot run `ssh` (install OpenSSH's client)")?;
    if !output.status.success() {
        bail!(
            "ssh failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// How long `ssh` may take to connect and get the server's banner: a guest
/// on QEMU's software CPU, beside others booting, can take far longer than
/// one under KVM to fork its sshd for a connection.
fn connect_timeout(vm: &Vm) -> Duration {
    match vm.vmm {
        VmmKind::Firecracker => Duration::from_secs(10),
        VmmKind::Qemu => Duration::from_secs(60),
    }
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
