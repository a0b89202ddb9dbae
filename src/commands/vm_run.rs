//! `banger vm run`: create (or start, or reuse) a VM, wait until it answers,
//! run a command in it over SSH and return that command's exit code.
//! Also home of the readiness wait shared by `vm create` and `vm start`.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::RunArgs;
use crate::host::{ssh, vsock};
use crate::lifecycle::{self, Ctx, Timings};
use crate::state::model::Vm;

pub fn run(args: RunArgs) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut timings = Timings::default();
    let existing = match &args.name {
        Some(name) => ctx.store.find_vm(name)?,
        None => None,
    };
    let vm = match existing {
        Some(mut vm) => {
            let _lock = ctx.lock_vm(&mut vm)?;
            if lifecycle::reconcile(&ctx, &mut vm)?.pid.is_none() {
                lifecycle::start(&ctx, &mut vm, &mut timings)?;
            }
            vm
        }
        None => {
            super::vm_create::create(&ctx, args.name.clone(), &args.spec, true, &mut timings)?.0
        }
    };
    let outcome =
        wait_ready(&ctx, &vm, false, args.spec.wait.timeout, &mut timings).and_then(|()| {
            if args.spec.wait.timings {
                super::print_timings(&timings);
            }
            super::vm_ssh::run_ssh(&ctx, &vm, &args.command)
        });
    if args.rm {
        let mut vm = ctx.store.vm(&vm.name)?;
        let _lock = ctx.lock_vm(&mut vm)?;
        super::vm_delete::delete(&ctx, &mut vm, true)
            .with_context(|| format!("cannot delete VM {}", vm.name))?;
    }
    outcome
}

/// Waits until the guest agent answers over vsock and port 22 accepts, then
/// pins the host key the agent reports. Leaves the VM running on timeout.
pub fn wait_ready(
    ctx: &Ctx,
    vm: &Vm,
    no_wait: bool,
    timeout: Option<Duration>,
    timings: &mut Timings,
) -> Result<()> {
    if no_wait {
        return Ok(());
    }
    let timeout = timeout.unwrap_or(ctx.config.wait_timeout);
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("waiting for VM {} to boot", vm.name));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let result = timings.time("ready", || wait_for_guest(ctx, vm, timeout));
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    result
}

fn wait_for_guest(ctx: &Ctx, vm: &Vm, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let uds = ctx.paths.vsock_uds(&vm.id);
    let ssh_addr = SocketAddr::from((vm.ip, 22));
    let mut last_problem = String::from("no answer yet");
    while Instant::now() < deadline {
        if lifecycle::observe(&ctx.paths, vm).pid.is_none() {
            bail!(
                "VM {} stopped while booting; see `banger vm logs {}`",
                vm.name,
                vm.name
            );
        }
        match vsock::ping(&uds, Duration::from_secs(2)) {
            Ok(reply) => match (
                reply.ssh_host_key,
                TcpStream::connect_timeout(&ssh_addr, Duration::from_secs(1)),
            ) {
                (Some(key), Ok(_)) => {
                    let hosts = [vm.ip.to_string(), ctx.dns_name(vm)];
                    ssh::pin_host_key(&ctx.paths.known_hosts(), &hosts, &key)?;
                    return Ok(());
                }
                (None, _) => last_problem = "the guest has no SSH host key yet".into(),
                (_, Err(e)) => last_problem = format!("SSH port: {e}"),
            },
            Err(e) => last_problem = format!("agent: {e}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!(
        "VM {} did not become ready within {}s ({last_problem}); it is left running: see `banger vm logs {}`",
        vm.name,
        timeout.as_secs(),
        vm.name
    )
}
