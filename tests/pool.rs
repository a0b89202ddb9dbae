//! Warm pools with real guests under the test VMM: `pool set` fills in the
//! background, `vm run` and `vm create` claim a booted VM (renamed in the
//! guest, in DNS and in `known_hosts`), the pool refills, concurrent runs
//! never share a VM, `pool rm` leaves nothing; and a fill or a claim killed
//! midway leaves what `gc` repairs. Slow (software CPU): the boots are
//! shared by the steps of each test.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use banger_testkit::context::{Args, guest_context};
use banger_testkit::{TestContext, assert_cmd_snapshot};

/// How long a pool may take to fill under the software CPU, with other
/// guests booting beside it.
const FILL_TIMEOUT: Duration = Duration::from_secs(300);

fn context() -> Option<TestContext> {
    let ctx = guest_context(&[])?;
    ctx.set_config("tap_pool_size = 2\n");
    Some(ctx)
}

/// `pool ls --json`'s entry for `image`.
fn pool(ctx: &TestContext, image: &str) -> serde_json::Value {
    ctx.json(&["pool", "ls", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["image"] == image)
        .cloned()
        .unwrap_or_else(|| panic!("no pool {image}"))
}

/// Waits until `image`'s pool has `ready` VMs ready and none filling;
/// returns the pool VMs' names.
#[track_caller]
fn wait_ready(ctx: &TestContext, image: &str, ready: u64) -> Vec<String> {
    let started = Instant::now();
    loop {
        let p = pool(ctx, image);
        if p["ready"] == ready && p["filling"] == 0 {
            return pool_vms(ctx);
        }
        assert!(
            started.elapsed() < FILL_TIMEOUT,
            "pool {image} did not fill within {FILL_TIMEOUT:?}: {p}\nfill log:\n{}",
            std::fs::read_to_string(ctx.home.join("pool-fill.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The names of the VMs pools keep (`vm ls --all` marks them).
fn pool_vms(ctx: &TestContext) -> Vec<String> {
    ctx.json(&["vm", "ls", "--all", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|vm| !vm["pool"].is_null())
        .map(|vm| vm["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The pool VM a `-v` claim says it took, if it took one.
fn claimed_from(stderr: &str) -> Option<String> {
    let (_, rest) = stderr.split_once(" is warm (pool VM ")?;
    Some(rest.split_whitespace().next()?.to_owned())
}

/// PIDs of this context's processes whose command line contains `what`.
fn processes(ctx: &TestContext, what: &str) -> Vec<i32> {
    ctx.processes()
        .into_iter()
        .filter(|pid| {
            banger_testkit::procs::cmdline(*pid)
                .join(" ")
                .contains(what)
        })
        .collect()
}

/// PIDs of this context's `banger pool fill` processes.
fn fills(ctx: &TestContext) -> Vec<i32> {
    processes(ctx, "pool fill")
}

/// Asserts that no fill and no SSH connection master of this context is
/// left (within 5 s: a fill told its VMs are gone exits on its own).
#[track_caller]
fn no_pool_processes_left(ctx: &TestContext) {
    assert!(
        banger_testkit::procs::eventually(Duration::from_secs(5), || fills(ctx).is_empty()),
        "pool fill left: {:?}",
        fills(ctx)
    );
    let masters = processes(ctx, "ControlMaster=yes");
    assert!(
        masters.is_empty(),
        "SSH connection masters left: {masters:?}"
    );
}

/// Whether pool VM `name` keeps an SSH connection open for its claimer.
fn has_ssh_master(ctx: &TestContext, name: &str) -> bool {
    let vms = ctx.json(&["vm", "ls", "--all", "--json"]);
    let id = vms
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["name"] == name)
        .and_then(|vm| vm["id"].as_str())
        .unwrap()
        .to_owned();
    let control = ctx.run_dir.join("vms").join(id).join("ssh.sock");
    std::os::unix::fs::FileTypeExt::is_socket(&std::fs::metadata(control).unwrap().file_type())
}

fn known_hosts(ctx: &TestContext) -> String {
    std::fs::read_to_string(ctx.home.join("ssh/known_hosts")).unwrap_or_default()
}

#[test]
fn a_pool_hands_out_booted_vms_renamed_and_refills() {
    let Some(ctx) = context() else { return };
    let err = ctx.fails(1, &["pool", "set", "nope", "--size", "1"]);
    assert!(err.contains("no image named \"nope\""), "{err}");
    let err = ctx.fails(
        2,
        &["pool", "set", "base", "--size", "1", "--work-size", "1M"],
    );
    assert!(err.contains("--work-size"), "{err}");
    assert_eq!(
        ctx.ok(&["pool", "ls", "-q"]),
        "",
        "a refused set made a pool"
    );

    ctx.ok(&["pool", "set", "base", "--size", "1", "--vcpus", "1"]);
    let first = wait_ready(&ctx, "base", 1);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "", "pool VMs are hidden");
    assert!(has_ssh_master(&ctx, &first[0]), "no SSH connection kept");
    assert_cmd_snapshot!("pool_ls_ready", ctx.run(["pool", "ls"]), &ctx);
    let p = pool(&ctx, "base");
    assert_eq!(p["size"], 1);
    assert_eq!(p["spec"]["vcpus"], 1);
    assert_eq!(p["memory_held_mib"], p["spec"]["memory_mib"]);

    // A run with the pool's spec takes the booted VM and names it.
    let out = ctx.run(&[
        "-v",
        "vm",
        "run",
        "--rm",
        "--vcpus",
        "1",
        "--name",
        "p1",
        "--timings",
        "--",
        "hostname",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "p1\n", "{stderr}");
    assert_eq!(
        claimed_from(&stderr).as_deref(),
        Some(first[0].as_str()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "  pool         warm (pool VM {} of pool base)",
            first[0]
        )),
        "{stderr}"
    );
    assert!(ctx.listed("p1").is_none(), "--rm deleted it");

    // The pool refills with another VM, and a create claims that one.
    let second = wait_ready(&ctx, "base", 1);
    assert_ne!(second, first);
    let out = ctx.run(&["-v", "vm", "create", "c1", "--vcpus", "1", "--timings"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        claimed_from(&stderr).as_deref(),
        Some(second[0].as_str()),
        "{stderr}"
    );
    assert!(stderr.contains("created VM c1 ("), "{stderr}");
    assert!(
        stderr.contains("from the warm pool of image base"),
        "{stderr}"
    );
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "c1\n");
    let guest = ctx.ok(&[
        "vm",
        "ssh",
        "c1",
        "--",
        "sh",
        "-c",
        "hostname; cat /etc/hostname",
    ]);
    assert_eq!(guest, "c1\nc1\n");
    let hosts = known_hosts(&ctx);
    assert!(hosts.contains("c1.vm"), "{hosts}");
    assert!(!hosts.contains(&format!("{}.vm", second[0])), "{hosts}");
    let show = ctx.show("c1");
    assert_eq!(show["status"], "running");
    assert_eq!(show["vcpus"], 1);

    // What a pool VM cannot take is made cold, and -v says why.
    wait_ready(&ctx, "base", 1);
    let out = ctx.run(&["-v", "vm", "create", "x2", "--vcpus", "2", "--no-wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("making the VM cold (it asks for vcpus 2, ")
            && stderr.contains("; pool base's VMs have vcpus 1, "),
        "{stderr}"
    );
    let out = ctx.run(&[
        "-v",
        "vm",
        "create",
        "x3",
        "--vcpus",
        "1",
        "--publish",
        "18080:80",
        "--no-wait",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("making the VM cold (--publish: "),
        "{stderr}"
    );
    ctx.ok(&["vm", "delete", "x2", "x3", "c1"]);
    assert_eq!(
        pool(&ctx, "base")["ready"],
        1,
        "cold creates took no pool VM"
    );

    // Eight runs at once against a pool of two: two warm, on two different
    // VMs, the others cold; all succeed.
    ctx.ok(&["pool", "set", "base", "--size", "2", "--vcpus", "1"]);
    let pooled = wait_ready(&ctx, "base", 2);
    let runs: Vec<Args> = (0..8)
        .map(|n| {
            Args::new(&[
                "-v",
                "vm",
                "run",
                "--rm",
                "--vcpus",
                "1",
                "--name",
                &format!("r{n}"),
                "--",
                "hostname",
            ])
        })
        .collect();
    let outs = ctx.concurrently(&runs);
    let mut warm = Vec::new();
    for (n, out) in outs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run r{n} failed: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("r{n}\n"));
        match claimed_from(&stderr) {
            Some(from) => warm.push(from),
            None => assert!(stderr.contains("making the VM cold ("), "{stderr}"),
        }
    }
    assert_eq!(warm.len(), 2, "{warm:?}");
    let distinct: HashSet<&String> = warm.iter().collect();
    assert_eq!(distinct.len(), 2, "a pool VM was claimed twice: {warm:?}");
    assert!(
        warm.iter().all(|w| pooled.contains(w)),
        "{warm:?} {pooled:?}"
    );
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");

    // Removing the pool stops and deletes its VMs, refilling or not.
    let err = ctx.run(&["pool", "rm", "base"]);
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(err.status.success(), "{stderr}");
    assert!(stderr.contains("removed pool base"), "{stderr}");
    assert_eq!(ctx.ok(&["vm", "ls", "--all", "-q"]), "");
    assert_eq!(ctx.ok(&["pool", "ls", "-q"]), "");
    no_pool_processes_left(&ctx);
    ctx.assert_nothing_left("after pool rm");
    let err = ctx.fails(1, &["pool", "rm", "base"]);
    assert!(err.contains("image base has no warm pool"), "{err}");
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_fill_or_a_claim_killed_midway_is_repaired_by_gc() {
    use std::os::unix::process::ExitStatusExt;
    let Some(ctx) = context() else { return };
    // The fill dies after making and starting its VM, before it is ready.
    let out = ctx
        .cmd(&["pool", "set", "base", "--size", "1", "--vcpus", "1"])
        .env("BANGER_FAULT", "pool:filling")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        banger_testkit::procs::eventually(Duration::from_secs(60), || {
            fills(&ctx).is_empty() && pool(&ctx, "base")["filling"] == 1
        }),
        "{}",
        pool(&ctx, "base")
    );
    let left = pool_vms(&ctx);
    assert_eq!(left.len(), 1, "{left:?}");
    let swept = ctx.ok(&["gc"]);
    assert!(
        swept.contains(&format!(
            "removed vm {} (the pool fill making it did not finish)",
            left[0]
        )),
        "{swept}"
    );
    assert!(
        swept.contains("refilling pool base (0 of 1 VMs)"),
        "{swept}"
    );
    let ready = wait_ready(&ctx, "base", 1);
    assert_ne!(ready, left);

    // The claim dies after taking the VM, before handing it over.
    let out = ctx
        .cmd(&[
            "vm", "run", "--rm", "--vcpus", "1", "--name", "k1", "--", "true",
        ])
        .env("BANGER_FAULT", "pool:claimed")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    assert_eq!(ctx.show("k1")["status"], "claiming");
    assert_eq!(pool(&ctx, "base")["ready"], 0, "a claimed VM left its pool");
    let swept = ctx.ok(&["gc"]);
    assert!(
        swept.contains("removed vm k1 (its claim from a warm pool did not finish)"),
        "{swept}"
    );
    assert!(
        swept.contains("refilling pool base (0 of 1 VMs)"),
        "{swept}"
    );
    assert!(ctx.listed("k1").is_none());

    // A pool VM older than the pool's max age is replaced (the same spec
    // keeps the one there is).
    let ready = wait_ready(&ctx, "base", 1);
    ctx.ok(&[
        "pool",
        "set",
        "base",
        "--size",
        "1",
        "--vcpus",
        "1",
        "--max-age",
        "1s",
    ]);
    assert_eq!(
        pool_vms(&ctx),
        ready,
        "a set with the same spec replaced a VM"
    );
    std::thread::sleep(Duration::from_secs(2));
    let swept = ctx.ok(&["gc"]);
    assert!(
        swept.contains(&format!(
            "removed vm {} (a pool VM older than its pool's max age (1s))",
            ready[0]
        )),
        "{swept}"
    );
    assert!(
        swept.contains("refilling pool base (0 of 1 VMs)"),
        "{swept}"
    );
    ctx.ok(&["pool", "rm", "base"]);
    assert_eq!(ctx.ok(&["vm", "ls", "--all", "-q"]), "");
    no_pool_processes_left(&ctx);
    ctx.assert_nothing_left("after pool rm");
}
