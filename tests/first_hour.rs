//! A newcomer's first hour: sizes banger cannot honour and flags a command
//! does not take are usage errors that say why; `doctor` gives hints that
//! fit the user running it; `doctor --boot` says whether a guest boots.

use std::os::unix::process::CommandExt;

use banger_testkit::context::{Sandbox, context_without_kvm};
use banger_testkit::{Need, assert_cmd_snapshot, require};

#[test]
fn sizes_and_flags_banger_cannot_honour_are_usage_errors() {
    let sandbox = Sandbox::default();
    let cases: [(&str, &[&str]); 3] = [
        (
            "work_size_below_minimum",
            &["vm", "create", "ok", "--work-size", "10M"],
        ),
        (
            "work_size_1k",
            &["vm", "run", "--work-size", "1k", "--", "true"],
        ),
        ("run_no_wait", &["vm", "run", "--no-wait", "--", "true"]),
    ];
    for (name, args) in cases {
        assert_cmd_snapshot!(name, sandbox.run(args), &sandbox);
    }
}

#[test]
fn a_disk_smaller_than_the_image_is_refused_in_human_units() {
    let Some(ctx) = context_without_kvm() else {
        return;
    };
    let out = ctx.run(["vm", "create", "small", "--no-start", "--disk-size", "1k"]);
    assert_cmd_snapshot!("disk_size_below_rootfs", out, &ctx);
}

#[test]
fn doctor_as_a_user_says_to_use_sudo_once_and_blames_no_firmware() {
    if require("host", &[Need::Root]).is_some() {
        return;
    }
    let sandbox = Sandbox::default();
    let out = sandbox
        .cmd(["doctor"])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run doctor as nobody");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("run it with sudo").count(), 1, "{stdout}");
    assert!(stdout.contains("FAIL  root"), "{stdout}");
    if stdout.contains("/dev/kvm: Permission denied") {
        assert!(!stdout.contains("VT-x"), "{stdout}");
    }
    assert!(
        stdout.contains("FAIL  state") && !stdout.contains("set BANGER_HOME to a writable"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("PATH (") && !stdout.contains("nothing to do"),
        "{stdout}"
    );
    for line in stdout.lines().filter(|l| l.starts_with("ok ")) {
        assert!(!line.contains('→'), "a passing check with a hint: {line}");
    }
}

use banger_testkit::context::faulty_vmm_context as faulty;

#[test]
fn doctor_boot_names_what_stopped_the_guest_and_deletes_its_vm() {
    let Some(ctx) = faulty("exit-after-start") else {
        return;
    };
    let out = ctx.run(["doctor", "--boot", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let checks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let boot = checks
        .as_array()
        .and_then(|all| all.iter().find(|c| c["check"] == "boot"))
        .expect("a boot check")
        .clone();
    assert_eq!(boot["status"], "fail", "{boot}");
    // With vmm = firecracker, the finding is the failure and the hint names the fallback.
    let detail = boot["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Firecracker cannot run VM")
            && detail.contains("the VMM reports KVM_EXIT_INTERNAL_ERROR"),
        "{boot}"
    );
    let hint = boot["hint"].as_str().unwrap_or_default();
    assert!(hint.contains(r#"vmm = "auto""#), "{boot}");
    assert!(stderr.contains("KVM_EXIT_INTERNAL_ERROR"), "{stderr}");
    assert_eq!(ctx.ok(["vm", "ls", "-q"]), "");
    ctx.assert_nothing_left("after doctor --boot");

    // A guest that never answers: the short timeout ends it.
    let silent = faulty("silent").expect("the same host");
    let out = silent.run(["doctor", "--boot", "--timeout", "2s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("did not boot within 2s") && stdout.contains("the guest printed nothing"),
        "{stdout}"
    );
    assert_eq!(silent.ok(["vm", "ls", "-q"]), "");
    silent.assert_nothing_left("after doctor --boot --timeout 2s");
}
