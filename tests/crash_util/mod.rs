//! Shared by the crash and concurrency tests: a context with an image under
//! the real Firecracker, VMM processes by socket, and the check that no VM
//! left anything on the host.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::common::{self, TestContext, firecracker, skip_unless, vmlinux};

/// Flags that keep a test VM small and quick to create.
pub const SMALL: [&str; 6] = ["--vcpus", "1", "--memory", "256", "--work-size", "64M"];

/// A context with the image `base`, or `None` (after saying why) when this
/// host cannot run Firecracker.
pub fn context() -> Option<TestContext> {
    if skip_unless(
        "firecracker",
        &[&firecracker(), &vmlinux(), Path::new("/dev/kvm")],
    ) {
        return None;
    }
    let ctx = TestContext::new(&firecracker());
    ctx.import_image("base");
    Some(ctx)
}

/// Live VMM processes of this context: (pid, API socket path).
pub fn vmms(ctx: &TestContext) -> Vec<(i32, String)> {
    ctx.processes()
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let at = args.iter().position(|a| a == "--api-sock")?;
            Some((pid, args.get(at + 1)?.clone()))
        })
        .collect()
}

/// Live VMM processes serving the API socket of VM `id`.
pub fn vmms_of(ctx: &TestContext, id: &str) -> Vec<i32> {
    let sock = ctx.run_dir.join("vms").join(id).join("api.sock");
    vmms(ctx)
        .into_iter()
        .filter(|(_, s)| Path::new(s) == sock)
        .map(|(pid, _)| pid)
        .collect()
}

/// Asserts that no VM of this context holds anything on the host: no VM
/// TAP, no loop device over its files, no NAT rule, no socket directory,
/// no VMM process. `when` says which step of the test is checked.
pub fn assert_nothing_left(ctx: &TestContext, when: &str) {
    let gone = common::eventually(std::time::Duration::from_secs(5), || vmms(ctx).is_empty());
    assert!(gone, "{when}: VMM processes left: {:?}", vmms(ctx));
    assert_eq!(ctx.links("bg-"), Vec::<String>::new(), "{when}: TAPs left");
    assert_eq!(
        ctx.loops(),
        Vec::<String>::new(),
        "{when}: loop devices left"
    );
    let ruleset = ctx.sh(&["nft", "list", "ruleset"]);
    assert!(
        !ruleset.contains("\"banger:"),
        "{when}: NAT rules left:\n{ruleset}"
    );
    let sockets: Vec<_> = std::fs::read_dir(ctx.run_dir.join("vms"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        sockets.is_empty(),
        "{when}: socket directories left: {sockets:?}"
    );
}

/// The VM named `name` in `banger vm ls --json`, if listed.
pub fn listed(ctx: &TestContext, name: &str) -> Option<serde_json::Value> {
    let all = ctx.json(&["vm", "ls", "--json"]);
    all.as_array()
        .expect("a JSON array")
        .iter()
        .find(|vm| vm["name"] == name)
        .cloned()
}
