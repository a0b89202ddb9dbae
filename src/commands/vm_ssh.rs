//! `banger vm ssh`: the user's OpenSSH into a running VM, with banger's key
//! and pinned host key; the remote exit code becomes banger's.

use std::time::Duration;

use anyhow::{Result, bail};

use super::Global;
use crate::cli::SshArgs;
use crate::host::ssh;
use crate::ops;
use crate::vm::VmRead;

pub fn run(args: SshArgs, global: &Global) -> Result<i32> {
    let ctx = global.ctx()?;
    let read = VmRead::observe_named(&ctx, args.name.as_str())?;
    let vm = &read.vm;
    if read.observed.pid.is_none() {
        bail!(
            "VM {} is stopped; start it with `banger vm start {}`",
            vm.name,
            vm.name
        );
    }
    if !ssh::is_pinned(&ctx.paths.known_hosts(), &vm.ip.to_string()) {
        // Created with --no-wait: learn (and pin) the host key first.
        ops::ready::wait(&ctx, vm, Some(Duration::from_secs(60)), &mut ctx.timings())?;
    }
    ops::ssh::run(&ctx, vm, &args.command)
}
