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

#[test]
fn a_sidecar_that_cannot_bind_dns_makes_the_start_warn_and_doctor_fail() {
    let Some(ctx) = banger_testkit::context::faulty_vmm_context("no-guest") else {
        return;
    };
    banger_testkit::require!("host", banger_testkit::Need::Program("python3"));
    ctx.set_config("tap_pool_size = 0\ndns_port = 5353\n");
    // Something else holds the DNS port on every address of the namespace.
    let mut holder = ctx
        .netns
        .command("python3")
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0', 5353))\n\
             print('bound', flush=True)\n\
             time.sleep(120)",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "bound");

    let out = ctx.run(&create_small("web").with(&["--no-wait"]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: VM names do not resolve: the sidecar cannot serve *.vm on 172.30.0.1:5353"
        ),
        "{stderr}"
    );
    let doctor = ctx.run(["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout).into_owned();
    assert_eq!(doctor.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL  sidecar        running, but without DNS for VM names"),
        "{text}"
    );
    // Every later start says so too.
    let out = ctx.run(&create_small("db").with(&["--no-wait"]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: VM names do not resolve"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    ctx.ok(["vm", "rm", "-f", "web", "db"]);
}

#[test]
fn a_deleted_bridge_comes_back_with_the_vms_taps_and_doctor_says_when_it_did_not() {
    let Some(ctx) = banger_testkit::context::faulty_vmm_context("no-guest") else {
        return;
    };
    let vm = ctx.json(&create_small("web").with(&["--no-wait", "--json"]));
    let tap = vm["tap"].as_str().unwrap().to_owned();
    let on_bridge = |ctx: &TestContext| {
        ctx.sh(&["ip", "-o", "link", "show", &tap])
            .contains("master banger0")
    };
    assert!(eventually(Duration::from_secs(5), || sidecars(&ctx).len() == 1));
    assert!(on_bridge(&ctx));

    // The sidecar makes the bridge again and puts the VM's TAP back on it.
    ctx.sh(&["ip", "link", "del", "banger0"]);
    assert!(
        eventually(Duration::from_secs(5), || on_bridge(&ctx)),
        "{}",
        ctx.sh(&["ip", "-o", "link", "show", &tap])
    );
    let doctor = String::from_utf8_lossy(&ctx.run(["doctor"]).stdout).into_owned();
    assert!(
        doctor.contains("ok    vm taps        the TAPs of 1 running VM(s) are on banger0"),
        "{doctor}"
    );

    // Without a sidecar to repair it, doctor names the VM that lost its bridge.
    for pid in sidecars(&ctx) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    assert!(eventually(Duration::from_secs(5), || sidecars(&ctx).is_empty()));
    ctx.sh(&["ip", "link", "del", "banger0"]);
    let out = ctx.run(["doctor"]);
    let doctor = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{doctor}");
    assert!(
        doctor.contains(&format!(
            "FAIL  vm taps        not on bridge banger0: web ({tap})"
        )),
        "{doctor}"
    );
    ctx.ok(["vm", "rm", "-f", "web"]);
}
