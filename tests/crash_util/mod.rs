//! Shared by the crash and concurrency tests: a context with an image under
//! the real Firecracker, VMM processes by socket, and the check that no VM
//! left anything on the host.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::common::{self, TestContext};

/// Flags that keep a test VM small and quick to create.
pub const SMALL: [&str; 6] = ["--vcpus", "1", "--memory", "256", "--work-size", "64M"];

/// A context with the image `base`, or `None` (after saying why) when this
/// host cannot run Firecracker.
pub fn context() -> Option<TestContext> {
    common::firecracker_context()
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

/// The instance state the VMM of VM `id` reports (`GET /`): `Running`
/// once it has been configured and started, `Not started` before.
pub fn vmm_instance_state(ctx: &TestContext, id: &str) -> String {
    let sock = ctx.run_dir.join("vms").join(id).join("api.sock");
    let mut stream = UnixStream::connect(&sock).expect("connect to the API socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    let body = loop {
        let n = stream.read(&mut chunk).expect("an API response");
        assert!(n > 0, "the API closed the connection early");
        response.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&response).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if body.len() >= length {
            break body[..length].to_owned();
        }
    };
    let info: serde_json::Value = serde_json::from_str(&body).expect("instance info JSON");
    info["state"].as_str().unwrap_or_default().to_owned()
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
