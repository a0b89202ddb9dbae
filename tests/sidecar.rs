//! The sidecar through the CLI with the real Firecracker: it starts with the
//! first VM (once, also under concurrent starts), answers DNS for running
//! VMs on the bridge address, keeps the TAP pool filled, comes back after
//! `kill -9`, and exits after its grace period once no VM runs.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use banger_testkit::context::firecracker_context;
use banger_testkit::procs::cmdline;
use banger_testkit::{Args, TestContext, create_small, eventually};

#[track_caller]
fn context() -> Option<TestContext> {
    let ctx = firecracker_context()?;
    ctx.set_config("tap_pool_size = 2\n");
    Some(ctx)
}

fn sidecars(ctx: &TestContext) -> Vec<i32> {
    ctx.processes()
        .into_iter()
        .filter(|pid| cmdline(*pid).iter().any(|arg| arg == "sidecar"))
        .collect()
}

/// `dig` in the test's namespace; its output even when it gets no answer
/// (the sidecar may still be starting).
fn dig(ctx: &TestContext, args: &[&str]) -> String {
    let out = ctx
        .netns
        .command("dig")
        .args(["@172.30.0.1", "+time=2", "+tries=1"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sidecar_serves_dns_and_the_pool_while_vms_run() {
    let Some(ctx) = context() else { return };
    assert!(sidecars(&ctx).is_empty());
    let a = ctx.json(&create_small("web").with(&["--no-wait", "--json"]));
    assert!(eventually(Duration::from_secs(5), || sidecars(&ctx).len() == 1));

    // DNS on the bridge address: running VM, AAAA, unknown name.
    assert!(eventually(Duration::from_secs(5), || dig(
        &ctx,
        &["+short", "web.vm"]
    )
    .trim()
        == a["ip"]));
    let aaaa = dig(&ctx, &["web.vm", "AAAA"]);
    assert!(
        aaaa.contains("status: NOERROR") && aaaa.contains("ANSWER: 0"),
        "{aaaa}"
    );
    assert!(dig(&ctx, &["nothing.vm"]).contains("status: NXDOMAIN"));

    // The pool fills up, and the next VM takes its TAP from it.
    assert!(
        eventually(Duration::from_secs(5), || ctx.links("bgpool").len() == 2),
        "{:?}",
        ctx.links("bgpool")
    );
    let b = ctx.json(&create_small("db").with(&["--no-wait", "--json"]));
    assert_eq!(b["tap"], format!("bg-{}", b["id"].as_str().unwrap()));
    assert!(
        eventually(Duration::from_secs(5), || ctx.links("bgpool").len() == 2),
        "pool did not refill"
    );

    // A stopped VM's name stops resolving within a second; the TAP goes back to the pool.
    ctx.ok(&["vm", "stop", "db", "--force"]);
    assert!(eventually(Duration::from_secs(1), || dig(&ctx, &["db.vm"])
        .contains("NXDOMAIN")));
    assert!(ctx.links("bg-").len() == 1);

    // kill -9: the next command that starts a VM brings it back.
    for pid in sidecars(&ctx) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || sidecars(&ctx).is_empty()));
    ctx.ok(&["vm", "start", "db", "--no-wait"]);
    assert!(eventually(Duration::from_secs(5), || sidecars(&ctx).len() == 1));
    assert!(eventually(Duration::from_secs(5), || dig(
        &ctx,
        &["+short", "db.vm"]
    )
    .trim()
        == b["ip"]));

    // No VM left running: it exits after its grace (3 s here) and removes its pool.
    ctx.ok(&["vm", "stop", "web", "db", "--force"]);
    assert!(
        eventually(Duration::from_secs(15), || sidecars(&ctx).is_empty()),
        "sidecar outlived its grace"
    );
    assert!(ctx.links("bgpool").is_empty(), "{:?}", ctx.links("bgpool"));
    assert!(ctx.links("bg-").is_empty());
}

#[test]
fn one_sidecar_under_concurrent_starts() {
    let Some(ctx) = context() else { return };
    let creates: Vec<Args> = (0..4)
        .map(|i| create_small(&format!("p{i}")).with(&["--no-wait"]))
        .collect();
    ctx.all_ok(&creates);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sidecars(&ctx).len(), 1);
    let taps = ctx.links("bg-");
    assert_eq!(taps.len(), 4, "each VM has its own TAP: {taps:?}");
    ctx.ok(&["vm", "rm", "--force", "p0", "p1", "p2", "p3"]);
}
