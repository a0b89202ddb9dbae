//! Concurrent commands through the real CLI and the real Firecracker: many
//! creates, deletes and listings at once; two starts of one VM; a delete
//! that meets a start holding the VM. Every command ends cleanly, the
//! database stays whole, and no address is handed out twice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use banger_testkit::context::firecracker_context as context;
use banger_testkit::{Args, create_small, eventually};
use serde_json::Value;

/// Asserts that a command either succeeded or failed the way banger fails:
/// exit code 1 with an `error:` line, no panic, no bare SQLite message.
fn assert_ends_cleanly(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{what}: ended with {}\n{stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{what} panicked:\n{stderr}");
    if !out.status.success() {
        assert!(stderr.starts_with("error: "), "{what}: {stderr}");
        if stderr.contains("database is locked") {
            assert!(
                stderr.contains("banger.db"),
                "{what}: a lock error without the database's path:\n{stderr}"
            );
        }
    }
}

fn assert_distinct(vms: &[Value], what: &str) {
    for field in ["id", "name", "ip", "mac", "vsock_cid"] {
        let values: Vec<String> = vms.iter().map(|vm| vm[field].to_string()).collect();
        let distinct: HashSet<&String> = values.iter().collect();
        assert_eq!(
            distinct.len(),
            values.len(),
            "{what}: duplicate {field}: {values:?}"
        );
    }
}

#[test]
fn creates_deletes_and_listings_at_once() {
    let Some(ctx) = context() else { return };
    // Eight VMs to delete, two of them running.
    let doomed: Vec<(String, String)> = (0..8)
        .map(|i| {
            let name = format!("old{i}");
            let start = if i < 2 { "--no-wait" } else { "--no-start" };
            let vm = ctx.json(&create_small(&name).with(&["--json", start]));
            (name, vm["id"].as_str().unwrap().to_owned())
        })
        .collect();

    let done = AtomicBool::new(false);
    let started = Instant::now();
    let (outputs, listings) = std::thread::scope(|scope| {
        let lister = scope.spawn(|| {
            let mut listings = Vec::new();
            while !done.load(Ordering::Relaxed) {
                listings.push(ctx.run(["vm", "ls", "--json"]));
            }
            listings
        });
        let mut commands = Vec::new();
        for i in 0..16 {
            let name = format!("new{i}");
            let args = create_small(&name).with(&["--no-start", "--json"]);
            commands.push((format!("create {name}"), args));
            if let Some((name, _)) = doomed.get(i / 2).filter(|_| i % 2 == 0) {
                let args = Args::new(&["vm", "delete", name, "--force"]);
                commands.push((format!("delete {name}"), args));
            }
        }
        let args: Vec<Args> = commands.iter().map(|(_, args)| args.clone()).collect();
        let outputs: Vec<(String, Output)> = commands
            .into_iter()
            .map(|(what, _)| what)
            .zip(ctx.concurrently(&args))
            .collect();
        done.store(true, Ordering::Relaxed);
        (outputs, lister.join().unwrap())
    });
    eprintln!(
        "16 creates, 8 deletes and {} listings in {:?}",
        listings.len(),
        started.elapsed()
    );

    for (what, out) in &outputs {
        assert_ends_cleanly(what, out);
    }
    let failed: Vec<_> = outputs
        .iter()
        .filter(|(_, out)| !out.status.success())
        .map(|(what, out)| format!("{what}: {}", String::from_utf8_lossy(&out.stderr)))
        .collect();
    assert!(failed.is_empty(), "failed:\n{}", failed.join("\n"));
    for (i, out) in listings.iter().enumerate() {
        assert_ends_cleanly(&format!("listing {i}"), out);
        let vms: Value = serde_json::from_slice(&out.stdout).expect("a JSON listing");
        assert_distinct(vms.as_array().unwrap(), &format!("listing {i}"));
    }

    let vms = ctx.json(["vm", "ls", "--json"]);
    let vms = vms.as_array().unwrap();
    assert_distinct(vms, "final listing");
    let names: HashSet<&str> = vms.iter().map(|vm| vm["name"].as_str().unwrap()).collect();
    let expected: HashSet<String> = (0..16).map(|i| format!("new{i}")).collect();
    assert_eq!(names, expected.iter().map(String::as_str).collect());
    for vm in vms {
        assert_eq!(vm["state"], "stopped", "{vm:#}");
        assert_eq!(vm["last_error"], Value::Null, "{vm:#}");
    }
    for (name, id) in &doomed {
        assert!(
            !ctx.home.join("vms").join(id).exists(),
            "files of deleted VM {name} left"
        );
    }
    ctx.assert_nothing_left("after the deletes");

    let db = rusqlite::Connection::open(ctx.home.join("banger.db")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let rows: i64 = db
        .query_row("SELECT count(*) FROM vms", [], |row| row.get(0))
        .unwrap();
    assert_eq!(rows, 16);
}

#[test]
fn two_starts_of_one_vm_start_one_vmm() {
    let Some(ctx) = context() else { return };
    let args = create_small("twin").with(&["--no-start", "--json"]);
    let id = ctx.json(&args)["id"].as_str().unwrap().to_owned();
    let start = Args::new(&["vm", "start", "twin", "--no-wait"]);
    for round in 0..5 {
        let outs = ctx.concurrently(&[start.clone(), start.clone()]);
        let stderrs = outs
            .iter()
            .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
            .collect::<Vec<_>>();
        for (out, stderr) in outs.iter().zip(&stderrs) {
            assert!(out.status.success(), "round {round}: {stderr}");
        }
        let already = stderrs
            .iter()
            .filter(|e| e.contains("VM twin is already running"))
            .count();
        assert_eq!(
            already, 1,
            "round {round}: one start must find it running: {stderrs:?}"
        );
        let vmms = ctx.vmms_of(&id);
        assert_eq!(vmms.len(), 1, "round {round}: VMMs of the VM: {vmms:?}");
        let vm = ctx.listed("twin").unwrap();
        assert_eq!(vm["state"], "running", "round {round}: {vm:#}");
        assert_eq!(vm["pid"], vmms[0], "round {round}: {vm:#}");
        assert_eq!(vm["last_error"], Value::Null, "round {round}: {vm:#}");
        ctx.ok(&["vm", "stop", "twin", "--force"]);
    }
    ctx.ok(&["vm", "rm", "twin"]);
    ctx.assert_nothing_left("after deleting the VM");
}

#[test]
fn delete_waits_for_a_start_holding_the_vm() {
    let Some(ctx) = context() else { return };
    let args = create_small("held").with(&["--no-start", "--json"]);
    let id = ctx.json(&args)["id"].as_str().unwrap().to_owned();
    // The guest never answers here, so this start holds the VM for its
    // whole readiness timeout.
    let mut start = ctx
        .cmd(["vm", "start", "held", "--timeout", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !ctx.vmms_of(&id).is_empty()),
        "the start never spawned a VMM"
    );
    let delete = ctx.run(["vm", "delete", "held", "--force"]);
    let start_ended = start.try_wait().unwrap().is_some();
    let start = start.wait_with_output().unwrap();
    assert_ends_cleanly("start", &start);
    assert_ends_cleanly("delete", &delete);
    let stderr = String::from_utf8_lossy(&delete.stderr);
    assert!(delete.status.success(), "{stderr}");
    assert!(
        stderr.contains("waiting for lock on VM held"),
        "the delete did not say it waited: {stderr}"
    );
    assert!(
        start_ended,
        "the delete finished while the start held the VM"
    );
    assert_eq!(ctx.listed("held"), None);
    assert!(!ctx.home.join("vms").join(&id).exists(), "VM files left");
    ctx.assert_nothing_left("after the delete");
}
