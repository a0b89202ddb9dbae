//! The VM's published ports: DNAT, loopback masquerade and forward rules in
//! table `inet banger`, in chains of their own, tagged `banger:<id>` like
//! the NAT rules.

use anyhow::{Context, Result};

use super::{Live, Removal, Resource};
use crate::state::handles::Handles;
use crate::state::model::Vm;
use crate::state::paths::Paths;
use crate::vm::Ctx;
use crate::vm::host::Network;

pub struct Ports;

/// Publishes the VM's ports, under the network lock; nothing to do for a
/// VM that publishes none. The journal must already say `ports`. Runs
/// beside the VMM's configuration, so it takes only what it needs.
pub fn publish(paths: &Paths, net: &dyn Network, bridge: &str, vm: &Vm) -> Result<()> {
    if vm.published.is_empty() {
        return Ok(());
    }
    let _net = crate::vm::ctx::lock_net(paths)?;
    for port in &vm.published {
        net.check_port_free(port)
            .with_context(|| format!("cannot publish {port}"))?;
    }
    net.add_port_rules(
        &super::rule_key(paths, &vm.id),
        vm.ip,
        bridge,
        &vm.published,
    )
}

/// Whether the NAT kind's release removes this VM's rules: it removes every
/// rule tagged with the VM's id, published ports included.
fn nat_releases(vm: &Vm, handles: &Handles) -> bool {
    handles.nat || vm.nat
}

impl Resource for Ports {
    fn kind(&self) -> &'static str {
        "published ports"
    }

    fn release(&self, ctx: &Ctx, vm: &Vm, handles: &Handles) -> Result<()> {
        let may_exist = handles.ports || !vm.published.is_empty();
        if may_exist && !nat_releases(vm, handles) {
            for key in [
                super::rule_key(&ctx.paths, &vm.id),
                crate::state::layout::legacy_nat_key(&vm.id),
            ] {
                ctx.host.net.remove_port_rules(&key)?;
            }
        }
        Ok(())
    }

    /// Nothing of its own: the NAT kind's sweep removes every rule of a VM
    /// that is not running, whichever chain it is in.
    fn sweep(&self, _: &Ctx, _: &Live, _: bool) -> Result<Vec<Removal>> {
        Ok(Vec::new())
    }
}
