//! Waiting until a started VM answers: the guest agent over vsock and SSH
//! on port 22; then its host key is pinned.

use std::io::IsTerminal;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::host::{ssh, vsock};
use crate::state::model::Vm;
use crate::vm::{Ctx, Timings, VmRead};

/// Waits until the guest agent answers over vsock and port 22 accepts, then
/// pins the host key the agent reports. Leaves the VM running on timeout.
pub fn wait(ctx: &Ctx, vm: &Vm, timeout: Option<Duration>, timings: &mut Timings) -> Result<()> {
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
        if VmRead::observe(ctx, vm.clone()).observed.pid.is_none() {
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
