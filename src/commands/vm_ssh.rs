//! `banger vm ssh`: the user's OpenSSH into a running VM, with banger's key
//! and pinned host key; the remote exit code becomes banger's.

use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use anyhow::{Result, bail};

use crate::cli::SshArgs;
use crate::host::ssh;
use crate::lifecycle::{self, Ctx, Timings};

pub fn run(args: SshArgs) -> Result<i32> {
    let ctx = Ctx::open()?;
    let vm = ctx.store.vm(&args.name)?;
    if lifecycle::observe(&ctx.paths, &vm).pid.is_none() {
        bail!(
            "VM {} is stopped; start it with `banger vm start {}`",
            vm.name,
            vm.name
        );
    }
    let known = std::fs::read_to_string(ctx.paths.known_hosts()).unwrap_or_default();
    let ip = vm.ip.to_string();
    if !known.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|h| h.split(',').any(|h| h == ip))
    }) {
        // Created with --no-wait: learn (and pin) the host key first.
        super::vm_run::wait_ready(
            &ctx,
            &vm,
            false,
            Some(Duration::from_secs(60)),
            &mut Timings::default(),
        )?;
    }
    let tty = args.command.is_empty() && std::io::stdin().is_terminal();
    let ssh_args = ssh::ssh_args(
        &ctx.paths.ssh_key(),
        &ctx.paths.known_hosts(),
        &ip,
        tty,
        &args.command,
    );
    let err = std::process::Command::new("ssh").args(&ssh_args).exec();
    bail!("cannot run `ssh` (install OpenSSH's client): {err}")
}
