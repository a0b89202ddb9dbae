//! Crash consistency through the real CLI and the real Firecracker: `vm
//! create`, `start`, `stop` and `delete` aborted right after each of their
//! stages (as a crash would), and `vm create` killed with SIGKILL at moments
//! spread over its run. After each: `vm ls` works and shows the VM absent or
//! stopped with an error, `gc` leaves nothing of it on the host, and the
//! command can be run again. Also: the next start replaces the VMM an
//! aborted start left, a killed stop leaves a live VMM to the next stop, and
//! an image commit aborted in its one crash window registers nothing.
//! The guest never boots here; no test waits for it.
#![cfg(feature = "fault-injection")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_testkit::context::firecracker_context as context;
use banger_testkit::rng::Rng;
use banger_testkit::{Args, TestContext, create_small, eventually};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Start,
    Stop,
    Delete,
}

impl Op {
    /// The command line of this operation on VM `name`.
    fn args(self, name: &str) -> Args {
        match self {
            Op::Create => create_small(name).with(&["--no-wait"]),
            Op::Start => Args::new(&["vm", "start", name, "--no-wait"]),
            Op::Stop => Args::new(&["vm", "stop", name, "--force"]),
            Op::Delete => Args::new(&["vm", "delete", name, "--force"]),
        }
    }
}

/// Creates VM `name` (running or not) and returns its id.
fn create(ctx: &TestContext, name: &str, running: bool) -> String {
    let start = if running { "--no-wait" } else { "--no-start" };
    let vm = ctx.json(&create_small(name).with(&["--json", start]));
    vm["id"].as_str().unwrap().to_owned()
}

/// Runs `op` on VM `name` with a fault injected after `stage`, checks what
/// the user and the host see afterwards, retries it, and removes the VM.
fn crash_after(ctx: &TestContext, op: Op, stage: &str, name: &str) {
    let what = format!("{op:?} aborted after {stage:?}");
    match op {
        Op::Create => {}
        Op::Start => drop(create(ctx, name, false)),
        Op::Stop | Op::Delete => drop(create(ctx, name, true)),
    }
    let out = ctx
        .cmd(&op.args(name))
        .env("BANGER_FAULT", stage)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{what}: the command did not abort ({})\n{stderr}",
        out.status
    );
    assert!(
        stderr.contains(&format!("injected fault after stage {stage:?}")),
        "{what}: {stderr}"
    );
    check_after_crash(ctx, name, &what);
    retry(ctx, op, name, &what);
}

/// After an interrupted command: the list works and shows VM `name` absent
/// or stopped with an error; `gc` then leaves nothing on the host.
fn check_after_crash(ctx: &TestContext, name: &str, what: &str) {
    if let Some(vm) = ctx.listed(name) {
        assert_eq!(vm["state"], "stopped", "{what}: {vm:#}");
        assert_eq!(vm["pid"], Value::Null, "{what}: {vm:#}");
        assert!(
            vm["last_error"].is_string(),
            "{what}: no last_error: {vm:#}"
        );
    }
    ctx.ok(&["gc"]);
    ctx.assert_nothing_left(&format!("{what}, after gc"));
}

/// Runs the interrupted command again (a create after deleting what the
/// crash left), checks that it did its job, then deletes the VM.
fn retry(ctx: &TestContext, op: Op, name: &str, what: &str) {
    let again = format!("{what}, run again");
    if let Op::Create = op
        && ctx.listed(name).is_some()
    {
        ctx.ok(&["vm", "delete", name]);
    }
    ctx.ok(&op.args(name));
    let vm = ctx.listed(name);
    match op {
        Op::Create | Op::Start => {
            let vm = vm.expect("listed");
            assert_eq!(vm["state"], "running", "{again}: {vm:#}");
            assert_eq!(vm["last_error"], Value::Null, "{again}: {vm:#}");
            let id = vm["id"].as_str().unwrap();
            assert_eq!(ctx.vmms_of(id).len(), 1, "{again}: one VMM");
        }
        Op::Stop => {
            let vm = vm.expect("listed");
            assert_eq!(vm["state"], "stopped", "{again}: {vm:#}");
        }
        Op::Delete => assert_eq!(vm, None, "{again}: still listed"),
    }
    if ctx.listed(name).is_some() {
        ctx.ok(&["vm", "rm", "--force", name]);
    }
    ctx.assert_nothing_left(&format!("{again}, then deleted"));
    let files: Vec<_> = std::fs::read_dir(ctx.home.join("vms"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "{again}: VM files left: {files:?}");
}

/// Aborted commands would otherwise leave core files where the tests run.
fn no_core_dumps() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read or write the struct passed,
    // which lives for both calls, and change only this process's limits
    // (inherited by the commands it runs).
    let rc = unsafe {
        libc::getrlimit(libc::RLIMIT_CORE, &mut limit);
        limit.rlim_cur = 0;
        libc::setrlimit(libc::RLIMIT_CORE, &limit)
    };
    assert_eq!(rc, 0, "setrlimit(RLIMIT_CORE)");
}

fn crash_table(cases: &[(Op, &str)]) {
    let Some(ctx) = context() else { return };
    no_core_dumps();
    for (i, (op, stage)) in cases.iter().enumerate() {
        let started = Instant::now();
        crash_after(&ctx, *op, stage, &format!("crash{i}"));
        eprintln!(
            "{op:?} aborted after {stage:?}: checked in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn create_aborted_before_the_vmm_runs() {
    crash_table(&[
        (Op::Create, "allocate"),
        (Op::Create, "disks"),
        (Op::Create, "root disk"),
        (Op::Create, "tap"),
    ]);
}

#[test]
fn create_aborted_while_the_vmm_runs() {
    crash_table(&[
        (Op::Create, "spawn"),
        (Op::Create, "configure"),
        (Op::Create, "sidecar"),
    ]);
}

#[test]
fn start_aborted_after_each_stage() {
    crash_table(&[
        (Op::Start, "root disk"),
        (Op::Start, "tap"),
        (Op::Start, "spawn"),
        (Op::Start, "configure"),
        (Op::Start, "sidecar"),
    ]);
}

#[test]
fn stop_and_delete_aborted_after_each_stage() {
    crash_table(&[
        (Op::Stop, "stop:vmm"),
        (Op::Stop, "stop:teardown"),
        (Op::Delete, "delete:stop"),
        (Op::Delete, "delete:files"),
    ]);
}

#[test]
fn start_replaces_the_vmm_of_an_aborted_start() {
    let Some(ctx) = context() else { return };
    no_core_dumps();
    let id = create(&ctx, "again", false);
    let out = ctx
        .cmd(&["vm", "start", "again", "--no-wait"])
        .env("BANGER_FAULT", "spawn")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT));
    // A VMM that was never configured is left behind.
    let orphans = ctx.vmms_of(&id);
    assert_eq!(orphans.len(), 1, "{orphans:?}");

    // The next start, with nothing in between, replaces it.
    let out = ctx.run(&["vm", "start", "again", "--no-wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("started VM again"), "{stderr}");
    let vmms = ctx.vmms_of(&id);
    assert_eq!(vmms.len(), 1, "{vmms:?}");
    assert_ne!(vmms, orphans, "the unconfigured VMM was kept");
    let vm = ctx.listed("again").unwrap();
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(vm["pid"], vmms[0], "{vm:#}");
    assert_eq!(vm["last_error"], Value::Null, "{vm:#}");
    ctx.ok(&["vm", "rm", "--force", "again"]);
    ctx.assert_nothing_left("after deleting the VM");
}

#[test]
fn a_killed_stop_leaves_a_live_vmm_for_the_next_stop() {
    let Some(ctx) = context() else { return };
    let id = create(&ctx, "halt", true);
    // No guest answers Ctrl-Alt-Del here: this stop waits out its timeout.
    let mut stop = ctx
        .cmd(&["vm", "stop", "halt", "--timeout", "60s"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stopping = eventually(Duration::from_secs(10), || {
        ctx.listed("halt")
            .is_some_and(|vm| vm["last_error"].as_str().is_some())
    });
    stop.kill().unwrap();
    stop.wait().unwrap();
    assert!(stopping, "the stop never recorded that it was stopping");

    // The guest may be shutting down: its VMM is not killed behind its back.
    let vm = ctx.listed("halt").unwrap();
    assert_eq!(vm["state"], "running", "{vm:#}");
    let error = vm["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("banger vm stop halt"), "{vm:#}");
    assert_eq!(ctx.vmms_of(&id).len(), 1);
    ctx.ok(&["gc"]);
    assert_eq!(ctx.vmms_of(&id).len(), 1, "gc killed the VMM");

    ctx.ok(&["vm", "stop", "halt", "--force"]);
    let vm = ctx.listed("halt").unwrap();
    assert_eq!(vm["state"], "stopped", "{vm:#}");
    assert_eq!(vm["last_error"], Value::Null, "{vm:#}");
    ctx.ok(&["vm", "rm", "halt"]);
    ctx.assert_nothing_left("after deleting the VM");
}

#[test]
fn create_killed_at_random_moments() {
    let Some(ctx) = context() else { return };
    let runs = 10;
    // Time a create once the bridge, key and sidecar exist.
    let args = Op::Create.args("probe");
    ctx.ok(&args);
    ctx.ok(&["vm", "rm", "--force", "probe"]);
    let started = Instant::now();
    ctx.ok(&args);
    let duration = started.elapsed();
    ctx.ok(&["vm", "rm", "--force", "probe"]);

    eprintln!("a create takes {duration:?}");
    let mut jitter = Rng::default();
    let mut outcomes: BTreeMap<&str, u32> = BTreeMap::new();
    for i in 0..runs {
        let name = format!("kill{i}");
        let slot = duration / runs;
        let delay = slot * i + jitter.within(slot);
        let mut child = ctx
            .cmd(&Op::Create.args(&name))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().ok();
        let status = child.wait().unwrap();
        let what = format!("create killed after {delay:?} ({status})");
        let outcome = match ctx.listed(&name) {
            None => "absent",
            Some(vm) if vm["state"] == "running" => {
                // The kill came after create had committed its work: a
                // complete VM, as if the command had finished.
                assert_eq!(vm["last_error"], Value::Null, "{what}: {vm:#}");
                let id = vm["id"].as_str().unwrap();
                assert_eq!(ctx.vmms_of(id).len(), 1, "{what}: one VMM");
                assert_eq!(
                    banger_testkit::api::instance_state(&ctx.api_sock(id)),
                    "Running",
                    "{what}"
                );
                assert_eq!(ctx.links("bg-"), vec![format!("bg-{id}")], "{what}");
                let ruleset = ctx.sh(&["nft", "list", "ruleset"]);
                assert!(
                    ruleset.contains(&format!(":{id}\"")),
                    "{what}: no NAT rules:\n{ruleset}"
                );
                ctx.ok(&["vm", "rm", "--force", &name]);
                "complete"
            }
            Some(vm)
                if vm["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("creation")) =>
            {
                "half-created"
            }
            Some(_) => "stopped with an error",
        };
        eprintln!("{what}: {outcome}");
        *outcomes.entry(outcome).or_default() += 1;
        check_after_crash(&ctx, &name, &what);
        retry(&ctx, Op::Create, &name, &what);
    }
    eprintln!("outcomes: {outcomes:?}");
    assert!(
        outcomes.get("complete").copied().unwrap_or(0) < runs,
        "no kill landed before create finished: {outcomes:?}"
    );
}

#[test]
fn an_import_aborted_at_its_commit_registers_nothing_and_gc_sweeps_it() {
    let Some(ctx) = banger_testkit::context::context_without_kvm() else {
        return;
    };
    let rootfs = ctx.dir.path().join("second-rootfs.ext4");
    banger_testkit::make_ext4(&rootfs, 16);
    let kernel = banger_testkit::vmlinux();
    let import = Args::new(&["image", "import", "second", "--kernel"]).with(&[
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
    ]);
    let out = ctx
        .cmd(&import)
        .env("BANGER_FAULT", "image:commit")
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
    // The files are in place, but no image is registered.
    assert!(ctx.home.join("images/second").is_dir());
    let images = ctx.ok(&["image", "ls", "-q"]);
    assert!(!images.lines().any(|l| l == "second"), "{images}");
    let swept = ctx.ok(&["gc"]);
    assert!(
        swept.contains("removed image-files") && swept.contains("images/second"),
        "{swept}"
    );
    assert!(!ctx.home.join("images/second").exists());
    assert_eq!(ctx.ok(&["gc", "--dry-run"]), "");
    // The same import then works.
    ctx.ok(&import);
    assert!(
        ctx.ok(&["image", "ls", "-q"])
            .lines()
            .any(|l| l == "second")
    );
}
