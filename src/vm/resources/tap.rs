//! The VM's TAP device `bg-<id>` on the bridge: claimed from the sidecar's
//! warm pool when it has one, else made; given back to the pool on release
//! while the sidecar runs, else deleted.

use anyhow::Result;

use super::{Journal, Live, Removal, Resource};
use crate::state::handles::Handles;
use crate::state::layout::{self, Name};
use crate::state::model::Vm;
use crate::vm::Ctx;

pub struct Tap;

/// Makes sure the bridge exists, then gives the VM its TAP.
pub fn acquire(ctx: &Ctx, vm: &Vm, journal: &mut Journal) -> Result<String> {
    {
        let _net = ctx.lock_net()?;
        ctx.host.net.ensure_bridge(
            &ctx.config.bridge,
            ctx.config.subnet.gateway(),
            ctx.config.subnet.prefix_len,
        )?;
    }
    let tap = layout::tap(&vm.id);
    journal.record(|h| h.tap = Some(tap.clone()))?;
    if !ctx.host.net.claim_pool_tap(&tap)? {
        ctx.host.net.create_tap(&tap, &ctx.config.bridge)?;
    }
    Ok(tap)
}

impl Resource for Tap {
    fn kind(&self) -> &'static str {
        "TAP"
    }

    /// Only the VM's own `bg-<id>` is ever given back or deleted, whatever
    /// the journal says.
    fn release(&self, ctx: &Ctx, vm: &Vm, _: &Handles) -> Result<()> {
        let tap = layout::tap(&vm.id);
        if !ctx.host.net.link_exists(&tap)? {
            return Ok(());
        }
        let pool_size = if ctx.host.sidecar.is_alive() {
            ctx.config.tap_pool_size
        } else {
            0
        };
        ctx.host.net.return_tap(&tap, pool_size)
    }

    fn sweep(&self, ctx: &Ctx, live: &Live, dry_run: bool) -> Result<Vec<Removal>> {
        let mut removals = Vec::new();
        let sidecar_alive = ctx.host.sidecar.is_alive();
        for link in ctx.host.net.list_links()? {
            let reason = match Name::parse(&link) {
                Some(Name::Tap(_)) if !live.taps.contains(&link) => "no running VM uses it",
                Some(Name::PoolTap(_)) if !sidecar_alive => "pool TAP without a sidecar",
                _ => continue,
            };
            if !dry_run {
                ctx.host.net.delete_link(&link)?;
            }
            removals.push(Removal::new("tap", link, reason));
        }
        Ok(removals)
    }
}
