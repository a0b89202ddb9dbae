//! What a user reads from banger's commands, as snapshots of the exit code,
//! stdout and stderr of each invocation: usage errors (no privileges needed),
//! then listings, reports and gc on VMs made with `vm create --no-start` from
//! a small imported image (root).

use banger_testkit::context::{Sandbox, context_without_kvm};
use banger_testkit::{Args, assert_cmd_snapshot, create_small};

#[test]
fn usage_errors_name_the_bad_value() {
    let sandbox = Sandbox::default();
    let cases: [(&str, &[&str]); 10] = [
        ("bad_name", &["vm", "create", "Bad_Name"]),
        ("bad_size", &["vm", "create", "ok", "--work-size", "8X"]),
        ("bad_memory", &["vm", "create", "ok", "--memory", "64"]),
        ("bad_vcpus", &["vm", "create", "ok", "--vcpus", "0"]),
        ("bad_duration", &["vm", "create", "ok", "--ttl", "5"]),
        ("bad_timeout", &["vm", "stop", "ok", "--timeout", "-1s"]),
        ("unknown_image", &["vm", "create", "ok", "--image", "nope"]),
        ("unknown_image_show", &["image", "show", "nope"]),
        ("unknown_vm", &["vm", "stop", "ghost"]),
        ("unknown_subcommand", &["vm", "frobnicate"]),
    ];
    for (name, args) in cases {
        assert_cmd_snapshot!(name, sandbox.run(args), &sandbox);
    }
}

#[test]
fn a_fresh_host_lists_nothing() {
    let sandbox = Sandbox::default();
    let cases: [(&str, &[&str]); 3] = [
        ("fresh_vm_ls", &["vm", "ls"]),
        ("fresh_vm_ls_q", &["vm", "ls", "-q"]),
        ("fresh_image_ls", &["image", "ls"]),
    ];
    for (name, args) in cases {
        assert_cmd_snapshot!(name, sandbox.run(args), &sandbox);
    }
}

#[test]
fn listings_reports_and_gc_of_stopped_vms() {
    let Some(ctx) = context_without_kvm() else {
        return;
    };
    let creates = [
        (
            "vm_create_no_start",
            create_small("alpha").with(&["--no-start"]),
        ),
        (
            "vm_create_no_start_ttl",
            create_small("beta").with(&["--no-start", "--ttl", "2h", "--no-nat"]),
        ),
    ];
    for (name, args) in &creates {
        assert_cmd_snapshot!(*name, ctx.run(args), &ctx);
    }
    // Something for gc to sweep: the lock file of a VM that does not exist.
    std::fs::write(ctx.run_dir.join("locks/vm-00000000dd.lock"), "").expect("plant a lock");
    let reads: [(&str, Args); 7] = [
        ("vm_ls", Args::new(&["vm", "ls"])),
        ("vm_ls_q", Args::new(&["vm", "ls", "-q"])),
        ("vm_show", Args::new(&["vm", "show", "alpha"])),
        ("vm_show_ttl", Args::new(&["vm", "show", "beta"])),
        ("image_ls", Args::new(&["image", "ls"])),
        ("image_show", Args::new(&["image", "show", "base"])),
        ("gc_dry_run", Args::new(&["gc", "--dry-run"])),
    ];
    let mut host = insta::Settings::clone_current();
    // Fixed when the VM's disks were made: dm-snapshot, reflink or copy, by host.
    host.add_filter(r"(cow strategy +)\S+", "$1[COW]");
    // The size of the fixture kernel, whichever Debian release it is.
    host.add_filter(
        r#"("vmlinux": \{\s+"sha256": "[0-9a-f]+",\s+"size": )\d+"#,
        "$1[SIZE]",
    );
    host.bind(|| {
        for (name, args) in &reads {
            assert_cmd_snapshot!(*name, ctx.run(args), &ctx);
        }
    });
    doctor(&ctx);
}

/// `doctor`: the checks whose outcome depends on the host (KVM, device-mapper,
/// reflinks, resolved, the forwarding a new namespace inherits) show by name;
/// tool versions and free space are filtered.
fn doctor(ctx: &banger_testkit::TestContext) {
    let mut host = insta::Settings::clone_current();
    host.add_filter(
        r"(?m)^\S+ +(kvm|device-mapper|reflink|vm names|ip forwarding) .*(\n +→.*)?$",
        "[HOST] $1",
    );
    host.add_filter(
        r"(?m)^(ok +(nftables|e2fsprogs|ssh client) +).*$",
        "$1[VERSION]",
    );
    host.add_filter(r"\d+(?:\.\d+)?[KMGT] free", "[SIZE] free");
    host.bind(|| assert_cmd_snapshot!("doctor", ctx.run(["doctor"]), ctx));
}

/// What the lifecycle commands say, on the real Firecracker (the guest never
/// boots here, so nothing waits for it and stops are forced).
#[test]
fn lifecycle_commands_say_what_they_did() {
    let Some(ctx) = banger_testkit::context::firecracker_context() else {
        return;
    };
    ctx.ok(&create_small("gamma").with(&["--no-start"]));
    ctx.ok(&create_small("delta").with(&["--no-start"]));
    let steps: [(&str, Args); 11] = [
        ("vm_logs_never_started", Args::new(&["vm", "logs", "gamma"])),
        (
            "vm_ssh_stopped",
            Args::new(&["vm", "ssh", "gamma", "--", "true"]),
        ),
        ("vm_stop_stopped", Args::new(&["vm", "stop", "gamma"])),
        (
            "vm_start_no_wait",
            Args::new(&["vm", "start", "gamma", "--no-wait"]),
        ),
        (
            "vm_start_running",
            Args::new(&["vm", "start", "gamma", "--no-wait"]),
        ),
        (
            "vm_stop_force",
            Args::new(&["vm", "stop", "gamma", "--force"]),
        ),
        ("vm_delete", Args::new(&["vm", "delete", "gamma"])),
        (
            "vm_delete_one_of_two_missing",
            Args::new(&["vm", "delete", "ghost", "delta"]),
        ),
        ("image_default", Args::new(&["image", "default", "base"])),
        ("image_delete", Args::new(&["image", "rm", "base"])),
        ("image_delete_missing", Args::new(&["image", "rm", "base"])),
    ];
    for (name, args) in &steps {
        assert_cmd_snapshot!(*name, ctx.run(args), &ctx);
    }
}

/// A reader that goes away (`banger vm ls | head -1`) ends a command
/// quietly: exit 0 and nothing on stderr, never a panic.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let sandbox = Sandbox::default();
    for args in [
        &["vm", "ls"][..],
        &["vm", "ls", "--json"],
        &["image", "ls"],
        &["completions", "bash"],
    ] {
        let (read, write) = nix::unistd::pipe().expect("pipe");
        drop(read);
        let out = sandbox
            .cmd(args)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .expect("run banger");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

/// What the pool commands say where nothing is pooled, and how they refuse
/// bad input before making anything (no pool, no fill started).
#[test]
fn pool_commands_without_pools_and_with_bad_input() {
    let Some(ctx) = context_without_kvm() else {
        return;
    };
    let cases: [(&str, &[&str]); 8] = [
        ("pool_ls_empty", &["pool", "ls"]),
        ("pool_ls_json_empty", &["pool", "ls", "--json"]),
        (
            "pool_set_unknown_image",
            &["pool", "set", "nope", "--size", "1"],
        ),
        ("pool_set_too_big", &["pool", "set", "base", "--size", "65"]),
        ("pool_set_no_size", &["pool", "set", "base"]),
        (
            "pool_set_disk_below_rootfs",
            &["pool", "set", "base", "--size", "1", "--disk-size", "1M"],
        ),
        ("pool_rm_no_pool", &["pool", "rm", "base"]),
        ("vm_ls_all_empty", &["vm", "ls", "--all"]),
    ];
    for (name, args) in cases {
        assert_cmd_snapshot!(name, ctx.run(args), &ctx);
    }
    assert_eq!(ctx.ok(&["pool", "ls", "-q"]), "");
    assert!(
        !ctx.home.join("pool-fill.log").exists(),
        "a refused pool set started a fill"
    );
}
