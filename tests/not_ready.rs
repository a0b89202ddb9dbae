//! What a user sees when a VM never answers: the VMM refuses its
//! configuration, exits during boot with a KVM failure, or runs a guest that
//! stays silent. Each uses the fake VMM's `VMM_FAKE_FAULT` (no QEMU, no KVM
//! needed), and checks the message, the logs' evidence on stderr, and that
//! `vm run --rm` leaves nothing behind. Also: a delete removes the VM's lock
//! file even while another command waits on it.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use banger_testkit::context::{SMALL, entries, faulty_vmm_context};
use banger_testkit::{Args, TestContext, assert_cmd_snapshot, eventually};

/// A context on the test VMM set to fail as `fault`, stopping quickly.
#[track_caller]
fn faulty(fault: &str) -> Option<TestContext> {
    let ctx = faulty_vmm_context(fault)?;
    ctx.set_config("tap_pool_size = 0\nstop_timeout = \"3s\"\n");
    Some(ctx)
}

/// `vm run --rm --name NAME [extra] -- true` with a small VM.
fn run_rm(name: &str, extra: &[&str]) -> Args {
    Args::new(&["vm", "run", "--rm", "--name", name])
        .with(SMALL)
        .with(extra)
        .with(&["--", "true"])
}

/// Nothing of any VM is left: no row, no runtime resource, no VM lock file.
fn assert_no_vm_left(ctx: &TestContext, when: &str) {
    assert_eq!(ctx.ok(["vm", "ls", "-q"]), "", "{when}: VMs left");
    ctx.assert_nothing_left(when);
    let vm_locks: Vec<String> = entries(&ctx.run_dir.join("locks"))
        .into_iter()
        .filter(|name| name.starts_with("vm-"))
        .collect();
    assert_eq!(vm_locks, Vec::<String>::new(), "{when}: VM lock files left");
    assert_eq!(
        entries(&ctx.home.join("vms")),
        Vec::<String>::new(),
        "{when}: VM directories left"
    );
}

#[test]
fn run_rm_with_a_vmm_that_refuses_its_configuration() {
    let Some(ctx) = faulty("configure") else {
        return;
    };
    let out = ctx.run(&run_rm("refused", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the VMM's last log lines") && stderr.contains("VMM_FAKE_FAULT=configure"),
        "{stderr}"
    );
    assert!(!stderr.contains("left running"), "{stderr}");
    assert_cmd_snapshot!("run_rm_vmm_refuses_configuration", out, &ctx);
    assert_no_vm_left(&ctx, "after the refused configuration");
}

#[test]
fn run_rm_with_a_vmm_that_exits_during_boot() {
    let Some(ctx) = faulty("exit-after-start") else {
        return;
    };
    let out = ctx.run(&run_rm("dies", &["--timeout", "30s"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // No console output and a KVM exit: the finding that Firecracker cannot
    // run guests here (an error, as this context picks Firecracker).
    for expected in [
        "KVM_EXIT_INTERNAL_ERROR",
        "the guest printed nothing",
        "Firecracker cannot run VM dies's guest on this host: the VMM exited before its guest \
         printed anything and the VMM reports KVM_EXIT_INTERNAL_ERROR",
        "`--vmm qemu`",
        "; VM dies was deleted (--rm)",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing:\n{stderr}");
    }
    assert!(
        !stderr.contains("banger vm logs"),
        "its logs are gone:\n{stderr}"
    );
    assert_cmd_snapshot!("run_rm_vmm_exits_during_boot", out, &ctx);
    assert_no_vm_left(&ctx, "after the VMM exited");
}

#[test]
fn run_rm_with_a_guest_that_never_answers() {
    let Some(ctx) = faulty("silent") else {
        return;
    };
    let out = ctx.run(&run_rm("silent", &["--timeout", "3s", "--timings"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not become ready within 3s")
            && stderr.contains("VM silent was deleted (--rm)")
            && !stderr.contains("left running"),
        "{stderr}"
    );
    assert!(
        stderr.contains("  ready ") && stderr.contains("  total "),
        "--timings shows the stages of a failed wait:\n{stderr}"
    );
    let mut settings = insta::Settings::clone_current();
    // Why the agent did not answer depends on timing (refused, reset, …).
    settings.add_filter(r"\(agent: [^)]*\)", "(agent: [WHY])");
    settings.add_filter(r"(?m)^  (\S+(?: \S+)?) +\d+\.\d ms.*$", "  $1 [MS]");
    settings.bind(|| assert_cmd_snapshot!("run_rm_guest_never_answers", out, &ctx));
    assert_no_vm_left(&ctx, "after the silent guest");
}

#[test]
fn a_silent_guest_is_left_running_by_create_and_start_and_never_deleted_when_borrowed() {
    let Some(ctx) = faulty("silent") else {
        return;
    };
    let out = ctx.run(&banger_testkit::create_small("kept").with(&["--timeout", "2s"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not become ready within 2s")
            && stderr.contains("it is left running: see `banger vm logs kept`")
            && stderr.contains("likely cause: the guest printed nothing"),
        "{stderr}"
    );
    assert_eq!(ctx.show("kept")["state"], "running");
    // `vm run --rm` on an existing VM leaves it, whatever happens.
    let out = ctx.run([
        "vm",
        "run",
        "--rm",
        "--name",
        "kept",
        "--timeout",
        "2s",
        "--",
        "true",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("VM kept existed before this run; --rm leaves it")
            && stderr.contains("it is left running"),
        "{stderr}"
    );
    assert_eq!(ctx.show("kept")["state"], "running");
    ctx.ok(["vm", "stop", "kept", "--force"]);
    let out = ctx.run(["vm", "start", "kept", "--timeout", "2s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("it is left running"), "{stderr}");
    ctx.ok(["vm", "rm", "kept", "--force"]);
    assert_no_vm_left(&ctx, "after the delete");
}

#[test]
fn run_rm_deletes_its_vm_on_sigterm_during_the_wait() {
    let Some(ctx) = faulty("silent") else {
        return;
    };
    let child = ctx
        .cmd(&run_rm("signalled", &["--timeout", "2m"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn banger");
    let running = eventually(Duration::from_secs(30), || {
        ctx.listed("signalled")
            .is_some_and(|vm| vm["state"] == "running")
    });
    assert!(running, "the VM never ran");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let out = child.wait_with_output().expect("wait for banger");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), out.status.signal()),
        (Some(143), None),
        "{stderr}"
    );
    assert!(
        stderr.contains("interrupted by SIGTERM while waiting for VM signalled")
            && stderr.contains("VM signalled was deleted (--rm)"),
        "{stderr}"
    );
    assert_no_vm_left(&ctx, "after SIGTERM");
}

#[test]
fn a_delete_removes_the_lock_file_even_while_a_start_waits_on_it() {
    let Some(ctx) = faulty("silent") else {
        return;
    };
    ctx.ok(&banger_testkit::create_small("doomed").with(&["--no-wait"]));
    // The guest ignores Ctrl-Alt-Del: the delete holds the lock for the
    // stop timeout (3 s) while the start waits on it.
    let delete = ctx
        .cmd(["vm", "rm", "doomed"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the delete");
    std::thread::sleep(Duration::from_millis(800));
    let start = ctx
        .cmd(["vm", "start", "doomed", "--no-wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the start");
    let deleted = delete.wait_with_output().expect("wait for the delete");
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let started = start.wait_with_output().expect("wait for the start");
    let stderr = String::from_utf8_lossy(&started.stderr);
    assert_eq!(started.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("waiting for lock on VM doomed")
            && stderr.contains("no VM named \"doomed\""),
        "{stderr}"
    );
    assert_no_vm_left(&ctx, "after the delete and the start");
    // Nothing left for doctor or gc to call leaked.
    assert_eq!(
        ctx.json(["gc", "--dry-run", "--json"]),
        serde_json::json!([])
    );
}
