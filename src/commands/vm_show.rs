//! `banger vm show`: one VM in detail.

use anyhow::Result;

use super::{Global, VmView, print_json};
use crate::cli::ShowArgs;
use crate::state::StateError;
use crate::state::parse::format_size;
use crate::vm::VmRead;

pub fn run(args: ShowArgs, global: &Global) -> Result<()> {
    let ctx = global.ctx()?;
    let vm = ctx.store.vm(args.name.as_str())?;
    let read =
        VmRead::reconciled(&ctx, vm)?.ok_or_else(|| StateError::NoSuchVm(args.name.to_string()))?;
    let view = VmView::new(&ctx, &read);
    if args.json {
        return print_json(&view);
    }
    let dash = || "-".to_owned();
    let lines = [
        ("name", view.name.to_string()),
        ("id", view.id.to_string()),
        ("state", view.state.as_str().to_owned()),
        ("image", view.image.clone()),
        ("ip", view.ip.clone()),
        ("dns name", view.dns_name.clone()),
        ("mac", view.mac.clone()),
        ("vcpus", view.vcpus.to_string()),
        ("memory", format_size(u64::from(view.memory_mib) << 20)),
        ("root disk", format_size(view.disk_size)),
        ("work disk", format_size(view.work_size)),
        (
            "cow strategy",
            view.cow_strategy.map_or_else(dash, |s| s.to_string()),
        ),
        ("vmm", view.vmm.to_string()),
        ("nat", if view.nat { "on" } else { "off" }.to_owned()),
        ("published", view.ports()),
        ("vsock cid", view.vsock_cid.to_string()),
        ("pid", view.pid.map_or_else(dash, |p| p.to_string())),
        ("tap", view.tap.clone().unwrap_or_else(dash)),
        ("created", view.created_at.clone()),
        ("expires", view.expires_at.clone().unwrap_or_else(dash)),
        ("last error", view.last_error.clone().unwrap_or_else(dash)),
    ];
    for (key, value) in lines {
        outln!("{key:<13} {value}")?;
    }
    Ok(())
}
