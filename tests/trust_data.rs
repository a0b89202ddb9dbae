//! What banger reads from outside itself is checked before it is used: VM
//! rows a hand edit or a bug broke are reported by name and hide no other
//! VM, a `handles.json` naming host objects that are not the VM's gets
//! none of them touched, a half-made VM cannot be started, a `vm run --rm`
//! killed outright leaves a VM that `gc` removes, and the fence of a bridge
//! a config change left behind stays. All on the fake VMM, fresh state each.
#![cfg(feature = "fault-injection")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use banger_testkit::context::faulty_vmm_context;
use banger_testkit::{TestContext, create_small, eventually};
use serde_json::Value;

/// A context whose VMs "run" under the fake VMM without a guest.
fn context() -> Option<TestContext> {
    faulty_vmm_context("no-guest")
}

fn db(ctx: &TestContext) -> rusqlite::Connection {
    rusqlite::Connection::open(ctx.home.join("banger.db")).unwrap()
}

/// Copies VM `from`'s row as a new row with `id` and `name`, at the next
/// free address, the way a hand edit would.
fn copy_row(ctx: &TestContext, from: &str, id: &str, name: &str, n: u8) {
    let ip = format!("172.30.0.{}", 200 + n);
    let mac = format!("06:00:ac:1e:00:{:02x}", 200 + n);
    let conn = db(ctx);
    conn.execute_batch("CREATE TEMP TABLE t AS SELECT * FROM vms WHERE 0")
        .unwrap();
    conn.execute("INSERT INTO t SELECT * FROM vms WHERE name = ?1", [from])
        .unwrap();
    conn.execute(
        "UPDATE t SET id = ?1, name = ?2, ip = ?3, mac = ?4, vsock_cid = 1000 + ?5",
        rusqlite::params![id, name, ip, mac, n],
    )
    .unwrap();
    conn.execute_batch("INSERT INTO vms SELECT * FROM t")
        .unwrap();
}

fn vm_dir(ctx: &TestContext, id: &str) -> PathBuf {
    ctx.home.join("vms").join(id)
}

fn state_db_exists(ctx: &TestContext) -> bool {
    ctx.home.join("banger.db").exists()
}

#[test]
fn unusable_rows_are_reported_by_name_and_hide_no_other_vm() {
    let Some(ctx) = context() else { return };
    let a = ctx.json(&create_small("a").with(&["--no-start", "--json"]));
    let a_id = a["id"].as_str().unwrap().to_owned();
    ctx.ok(&create_small("b").with(&["--no-start"]));
    assert!(
        state_db_exists(&ctx),
        "the database is not where the test looks"
    );
    copy_row(&ctx, "a", "..", "dotdot", 1);
    copy_row(&ctx, "a", "", "empty", 2);
    copy_row(&ctx, "a", "0123456789", "far", 3);
    let conn = db(&ctx);
    // One corrupt column each: a non-number, an address outside the
    // subnet, an unknown state.
    conn.execute("UPDATE vms SET vcpus = 'many' WHERE name = 'b'", [])
        .unwrap();
    conn.execute(
        "UPDATE vms SET ip = '10.9.9.9', mac = '06:00:0a:09:09:09' WHERE name = 'far'",
        [],
    )
    .unwrap();

    let out = ctx.run(["vm", "ls"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{stdout}"))
            .to_owned()
    };
    assert!(line("a").contains("stopped"), "{stdout}");
    for bad in ["b", "dotdot", "empty", "far"] {
        assert!(line(bad).contains("unusable"), "{stdout}");
        assert!(
            stderr.contains(&format!("VM {bad}'s database row is unusable")),
            "{stderr}"
        );
    }
    assert!(stderr.contains("column vcpus"), "{stderr}");
    assert!(
        stderr.contains("10.9.9.9 is not a guest address"),
        "{stderr}"
    );
    assert!(stderr.contains("not a banger VM id"), "{stderr}");
    let listed = ctx.json(["vm", "ls", "--json"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    ctx.ok(["vm", "show", "a"]);
    let refused = ctx.fails(1, ["vm", "start", "dotdot"]);
    assert!(refused.contains("vm delete dotdot"), "{refused}");

    // Deleting the bad rows removes those rows and nothing else.
    for bad in ["dotdot", "empty", "far", "b"] {
        let said = ctx.ok(["vm", "delete", bad]);
        drop(said);
    }
    assert!(vm_dir(&ctx, &a_id).join("work.ext4").exists());
    assert!(ctx.home.join("images").exists());
    assert!(state_db_exists(&ctx));
    let left = ctx.json(["vm", "ls", "--json"]);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    ctx.ok(["gc"]);
    assert!(vm_dir(&ctx, &a_id).join("work.ext4").exists());
    ctx.ok(["vm", "delete", "a"]);
}

/// Writes VM `id`'s `handles.json` with `fields` merged over what it holds.
fn rewrite_handles(ctx: &TestContext, id: &str, fields: Value) {
    let path = vm_dir(ctx, id).join("handles.json");
    let mut handles: Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    for (k, v) in fields.as_object().unwrap() {
        handles[k] = v.clone();
    }
    std::fs::write(&path, serde_json::to_vec(&handles).unwrap()).unwrap();
}

#[test]
fn a_journal_naming_host_interfaces_gets_none_of_them_touched() {
    let Some(ctx) = context() else { return };
    ctx.sh(&[
        "ip", "link", "add", "eth7", "type", "veth", "peer", "name", "eth7p",
    ]);
    ctx.sh(&["ip", "link", "add", "docker0", "type", "bridge"]);
    // A stopped VM whose journal names a host interface: `vm ls` reconciles it.
    let stopped = ctx.json(&create_small("cold").with(&["--no-start", "--json"]));
    let stopped_id = stopped["id"].as_str().unwrap();
    rewrite_handles(
        &ctx,
        stopped_id,
        serde_json::json!({"tap": "eth7", "nat": true}),
    );
    ctx.ok(["vm", "ls"]);
    assert!(
        ctx.links("eth7").contains(&"eth7".to_owned()),
        "vm ls deleted eth7"
    );
    // A running one: its stop and delete give back or delete only bg-<id>.
    let running = ctx.json(&create_small("warm").with(&["--no-wait", "--json"]));
    let running_id = running["id"].as_str().unwrap();
    rewrite_handles(&ctx, running_id, serde_json::json!({"tap": "docker0"}));
    ctx.ok(["vm", "ls"]);
    ctx.ok(["vm", "delete", "--force", "warm"]);
    ctx.ok(["vm", "delete", "cold"]);
    assert!(ctx.links("eth7").contains(&"eth7".to_owned()));
    assert_eq!(ctx.links("docker0"), ["docker0"]);
    assert!(ctx.links("bgpool").is_empty(), "{:?}", ctx.links("bgpool"));
    assert!(ctx.links(&format!("bg-{running_id}")).is_empty());
}

#[test]
fn a_journal_naming_a_foreign_loop_device_does_not_get_it_detached() {
    let Some(ctx) = context() else { return };
    let file = ctx.dir.path().join("foreign.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let dev = banger_testkit::run("losetup", &["-f", "--show", file.to_str().unwrap()]);
    let dev = dev.trim().to_owned();
    let vm = ctx.json(&create_small("loopy").with(&["--no-start", "--json"]));
    let id = vm["id"].as_str().unwrap();
    rewrite_handles(
        &ctx,
        id,
        serde_json::json!({"cow_loop": dev, "base_loop": dev, "cow_strategy": "dm-snapshot"}),
    );
    ctx.ok(["vm", "ls"]);
    ctx.ok(["vm", "delete", "loopy"]);
    ctx.ok(["gc"]);
    let still = banger_testkit::run("losetup", &["-j", file.to_str().unwrap()]);
    banger_testkit::run("losetup", &["-d", &dev]);
    assert!(still.contains(&dev), "the foreign loop device was detached");
}

#[test]
fn a_half_created_vm_cannot_be_started_and_gc_removes_it() {
    let Some(ctx) = context() else { return };
    let out = ctx
        .cmd(&create_small("half").with(&["--no-start"]))
        .env("BANGER_FAULT", "disks:files")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let files = ctx.home.join("vms");
    assert!(
        std::fs::read_dir(&files)
            .unwrap()
            .flatten()
            .any(|d| d.path().join("work.ext4").exists()),
        "the disks were not made"
    );
    let refused = ctx.fails(1, ["vm", "start", "half", "--no-wait"]);
    assert!(refused.contains("creation did not finish"), "{refused}");
    assert!(refused.contains("`banger vm delete half`"), "{refused}");
    assert!(refused.contains("`banger gc`"), "{refused}");
    assert!(ctx.vmms_gone(), "a VMM was started for a half-made VM");
    let gc = ctx.ok(["gc"]);
    assert!(ctx.listed("half").is_none(), "{gc}");
}

#[test]
fn a_vm_run_rm_killed_outright_leaves_a_vm_gc_removes_after_its_lease() {
    let Some(ctx) = context() else { return };
    let mut run = ctx
        .cmd(&[
            "vm",
            "run",
            "--rm",
            "--name",
            "leased",
            "--timeout",
            "5m",
            "--",
            "true",
        ])
        .env("BANGER_RM_LEASE", "3s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = eventually(Duration::from_secs(30), || {
        ctx.listed("leased")
            .is_some_and(|vm| vm["state"] == "running")
    });
    assert!(running, "the run's VM never ran");
    // Renewed while the run lives.
    std::thread::sleep(Duration::from_secs(4));
    ctx.ok(["gc"]);
    assert!(
        ctx.listed("leased").is_some(),
        "gc removed a VM whose run is alive"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    let shown = ctx.show("leased");
    assert!(shown["expires_at"].is_string(), "{shown}");
    std::thread::sleep(Duration::from_secs(4));
    let gc = ctx.ok(["gc"]);
    assert!(ctx.listed("leased").is_none(), "{gc}");
    assert!(ctx.vmms_gone());
}

#[test]
fn a_vm_run_rm_borrowing_an_existing_vm_leaves_it_and_its_ttl() {
    let Some(ctx) = context() else { return };
    ctx.ok(&create_small("kept").with(&["--no-wait"]));
    let out = ctx
        .cmd(&[
            "vm",
            "run",
            "--rm",
            "--name",
            "kept",
            "--timeout",
            "2s",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let shown = ctx.show("kept");
    assert!(shown["expires_at"].is_null(), "{shown}");
    ctx.ok(["vm", "delete", "--force", "kept"]);
}

#[test]
fn the_fence_of_a_bridge_left_by_a_config_change_stays() {
    let Some(ctx) = context() else { return };
    ctx.ok(&create_small("first").with(&["--no-nat", "--no-wait"]));
    ctx.set_config("tap_pool_size = 0\nbridge = \"banger9\"\nsubnet = \"172.31.0.0/24\"\n");
    ctx.ok(&create_small("second").with(&["--no-nat", "--no-wait"]));
    let input = ctx.sh(&["nft", "list", "chain", "inet", "banger", "input"]);
    let forward = ctx.sh(&["nft", "list", "chain", "inet", "banger", "forward"]);
    for (bridge, gateway) in [("banger0", "172.30.0.1"), ("banger9", "172.31.0.1")] {
        assert!(
            input.contains(&format!(
                "iifname \"{bridge}\" ip daddr {gateway} udp dport 53 accept"
            )),
            "{input}"
        );
        assert!(
            input.contains(&format!("iifname \"{bridge}\" drop")),
            "{input}"
        );
        assert!(
            forward.contains(&format!("iifname \"{bridge}\" drop")),
            "{forward}"
        );
        assert!(
            forward.contains(&format!("oifname \"{bridge}\" drop")),
            "{forward}"
        );
    }
    ctx.ok(["vm", "delete", "--force", "second"]);
    ctx.set_config("tap_pool_size = 0\n");
    ctx.ok(["vm", "delete", "--force", "first"]);
}
