//! Operations through the CLI: completions and man page, `doctor`, `gc`
//! sweeping planted leaks (and only banger's), TTL expiry, `bench` output.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use banger_testkit::context::{Sandbox, context_without_kvm, firecracker_context};
use banger_testkit::{Need, TestContext, eventually, firecracker, loops_under, require};

#[test]
fn checked_in_completions_are_current() {
    for (shell, file) in [
        ("bash", "banger.bash"),
        ("zsh", "_banger"),
        ("fish", "banger.fish"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_banger"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let generated = String::from_utf8(out.stdout).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("completions")
            .join(file);
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            generated == checked_in,
            "{} is stale: regenerate with `banger completions {shell} > completions/{file}`",
            path.display()
        );
        assert!(
            generated.contains("__complete vm"),
            "{shell} script does not complete VM names"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(["completions", "powershell"])
        .output()
        .unwrap();
    assert!(out.status.success() && !out.stdout.is_empty());
}

#[test]
fn man_page_documents_the_commands() {
    let out = Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("man")
        .output()
        .unwrap();
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH banger"),
        "{}",
        &page[..200.min(page.len())]
    );
    for word in ["vm", "image", "doctor", "gc", "completions"] {
        assert!(page.contains(word), "man page lacks {word}");
    }
}

#[test]
fn bash_completion_lists_vm_names() {
    let sandbox = Sandbox::default();
    // No database yet: nothing, quietly, and nothing created.
    let out = sandbox.run(["__complete", "vm"]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());
    assert!(!sandbox.home.exists());
}

#[test]
fn doctor_without_firecracker_warns_when_qemu_runs_vms_and_fails_without_either() {
    require!(
        "host",
        Need::Root,
        Need::Program("qemu-system-x86_64"),
        Need::Program("vhost-device-vsock"),
        Need::File(&banger_testkit::vmm_qemu()),
    );
    let mut ctx = TestContext::new(std::path::Path::new("/nonexistent/firecracker"));
    ctx.extra_env.push((
        "BANGER_VMM_QEMU".into(),
        banger_testkit::vmm_qemu().display().to_string(),
    ));
    let check = |ctx: &TestContext, name: &str| {
        let out = ctx.run(&["doctor", "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let found = json
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check: {json}"));
        (out.status.code(), found)
    };
    let (_, fc) = check(&ctx, "firecracker");
    assert_eq!(fc["status"], "warn", "{fc}");
    let hint = fc["hint"].as_str().unwrap();
    assert!(
        hint.contains("releases page") && hint.contains("QEMU's software CPU"),
        "{fc}"
    );
    let (_, vmm) = check(&ctx, "vmm");
    assert_eq!(vmm["status"], "warn", "{vmm}");
    assert!(
        vmm["detail"]
            .as_str()
            .unwrap()
            .starts_with("auto picks qemu: Firecracker not found"),
        "{vmm}"
    );

    ctx.extra_env.push((
        "BANGER_VMM_QEMU".into(),
        "/nonexistent/banger-vmm-qemu".into(),
    ));
    let (code, fc) = check(&ctx, "firecracker");
    assert_eq!(code, Some(1));
    assert_eq!(fc["status"], "fail", "{fc}");
    let (_, qemu) = check(&ctx, "qemu");
    assert_eq!(qemu["status"], "warn", "{qemu}");
    assert!(
        qemu["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/banger-vmm-qemu"),
        "{qemu}"
    );
    let (_, vmm) = check(&ctx, "vmm");
    assert_eq!(vmm["status"], "fail", "{vmm}");
    let text = String::from_utf8_lossy(&ctx.run(&["doctor"]).stdout).into_owned();
    assert!(text.contains("ok    root"), "{text}");
}

#[test]
fn doctor_passes_with_firecracker() {
    let Some(ctx) = context_without_kvm() else {
        return;
    };
    let json: serde_json::Value =
        serde_json::from_slice(&ctx.run(&["doctor", "--json"]).stdout).unwrap();
    let status = |name: &str| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("firecracker"), "pass");
    assert_eq!(status("image"), "pass");
    assert_eq!(status("leftovers"), "pass");
    assert_eq!(status("kvm"), "pass");
}

#[test]
fn gc_removes_planted_leaks_and_only_those() {
    require!("host", Need::Root);
    let ctx = TestContext::new(&firecracker());
    ctx.ok(&["vm", "ls"]); // creates the state directories
    // Banger's leaks: a VM TAP, a pool TAP (no sidecar), a loop device over a
    // file under BANGER_HOME, NAT rules for a VM that does not exist.
    ctx.sh(&["ip", "tuntap", "add", "bg-00000000aa", "mode", "tap"]);
    ctx.sh(&["ip", "tuntap", "add", "bgpool7", "mode", "tap"]);
    let leaked_loop = loop_over(&ctx.home.join("leaked.img"));
    rule_naming_vm_aa(&ctx, "banger", "leak");
    std::fs::create_dir_all(ctx.run_dir.join("vms/00000000bb")).unwrap();
    std::fs::write(ctx.run_dir.join("locks/vm-00000000dd.lock"), "").unwrap();
    // A VMM whose VM is gone: its API socket lies under the run dir.
    let orphan_dir = ctx.run_dir.join("vms/00000000cc");
    std::fs::create_dir_all(&orphan_dir).unwrap();
    let mut orphan = ctx
        .netns
        .command(firecracker())
        .arg("--api-sock")
        .arg(orphan_dir.join("api.sock"))
        .env("BANGER_RUN_DIR", &ctx.run_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || orphan_dir
        .join("api.sock")
        .exists()));
    // Foreign things beside them.
    ctx.sh(&["ip", "tuntap", "add", "user-tap0", "mode", "tap"]);
    let foreign_loop = loop_over(&ctx.dir.path().join("foreign.img"));
    rule_naming_vm_aa(&ctx, "userstuff", "c");
    let foreign_rules = ctx.sh(&["nft", "list", "table", "inet", "userstuff"]);

    let dry = ctx.ok(&["gc", "--dry-run"]);
    for leak in [
        "bg-00000000aa",
        "bgpool7",
        &leaked_loop,
        "00000000aa",
        "00000000bb",
    ] {
        assert!(
            dry.contains(leak),
            "dry run does not mention {leak}:\n{dry}"
        );
    }
    assert_eq!(
        ctx.links("bg-"),
        ["bg-00000000aa"],
        "dry run changed something"
    );
    assert!(loops_under(&ctx.home).contains(&leaked_loop));

    let done = ctx.ok(&["gc"]);
    assert!(done.contains("removed process"), "{done}");
    assert!(
        orphan.wait().is_ok_and(|status| !status.success()),
        "the orphaned VMM survived gc"
    );
    assert!(!ctx.run_dir.join("locks/vm-00000000dd.lock").exists());
    assert!(done.contains("removed tap bg-00000000aa"), "{done}");
    assert!(ctx.links("bg-").is_empty());
    assert!(ctx.links("bgpool").is_empty());
    assert!(!loops_under(&ctx.home).contains(&leaked_loop));
    assert!(!ctx.run_dir.join("vms/00000000bb").exists());
    let banger_rules = ctx.sh(&["nft", "list", "table", "inet", "banger"]);
    assert!(
        !banger_rules.contains("banger:00000000aa"),
        "{banger_rules}"
    );
    // Foreign things untouched.
    assert_eq!(ctx.links("user-tap"), ["user-tap0"]);
    assert!(loops_under(ctx.dir.path()).contains(&foreign_loop));
    assert_eq!(
        ctx.sh(&["nft", "list", "table", "inet", "userstuff"]),
        foreign_rules
    );
    Command::new("losetup")
        .args(["-d", &foreign_loop])
        .status()
        .unwrap();
    // Nothing left: silent.
    assert_eq!(ctx.ok(&["gc"]), "");
}

/// A 1 MiB file at `path` behind a loop device; returns the device.
fn loop_over(path: &std::path::Path) -> String {
    std::fs::File::create(path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    banger_testkit::run("losetup", &["--find", "--show", path.to_str().unwrap()])
        .trim()
        .to_owned()
}

/// A forward-hook chain in `inet TABLE` with a rule commented as banger's
/// for VM 00000000aa, in the context's namespace.
fn rule_naming_vm_aa(ctx: &TestContext, table: &str, chain: &str) {
    let hook = "{ type filter hook forward priority 0; }";
    ctx.sh(&["nft", "add", "table", "inet", table]);
    ctx.sh(&["nft", "add", "chain", "inet", table, chain, hook]);
    ctx.sh(&[
        "nft",
        "add",
        "rule",
        "inet",
        table,
        chain,
        "iifname",
        "bg-00000000aa",
        "accept",
        "comment",
        "\"banger:00000000aa\"",
    ]);
}

#[test]
fn gc_deletes_expired_vms() {
    let Some(ctx) = context_without_kvm() else {
        return;
    };
    ctx.ok(&[
        "vm",
        "create",
        "short",
        "--no-start",
        "--ttl",
        "1s",
        "--work-size",
        "64M",
    ]);
    ctx.ok(&[
        "vm",
        "create",
        "long",
        "--no-start",
        "--ttl",
        "2h",
        "--work-size",
        "64M",
    ]);
    std::thread::sleep(Duration::from_millis(2100));
    let out = ctx.ok(&["gc", "--json"]);
    let removed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        removed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "vm" && r["target"] == "short"),
        "{out}"
    );
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "long\n");
}

#[test]
fn bench_reports_stages() {
    let Some(ctx) = firecracker_context() else {
        return;
    };
    let report = ctx.json(&["bench", "create", "--runs", "2", "--json"]);
    assert_eq!(report["runs"], 2);
    let stages = report["stages"].as_array().unwrap();
    let names: Vec<&str> = stages.iter().map(|s| s[0].as_str().unwrap()).collect();
    for stage in ["disks", "spawn", "configure", "total"] {
        assert!(names.contains(&stage), "{names:?}");
    }
    for stage in stages {
        let s = &stage[1];
        assert!(s["min_ms"].as_f64().unwrap() <= s["median_ms"].as_f64().unwrap());
        assert!(s["median_ms"].as_f64().unwrap() <= s["max_ms"].as_f64().unwrap());
    }
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "", "bench left VMs behind");
}

#[test]
fn gc_leaves_the_taps_another_home_marked() {
    require!("host", Need::Root);
    let ctx = TestContext::new(&firecracker());
    ctx.ok(&["vm", "ls"]);
    for tap in ["bg-aaaaaaaaaa", "bg-bbbbbbbbbb"] {
        ctx.sh(&["ip", "tuntap", "add", tap, "mode", "tap"]);
    }
    // Another BANGER_HOME's VM TAP carries that home's mark.
    ctx.sh(&[
        "ip",
        "link",
        "set",
        "bg-aaaaaaaaaa",
        "alias",
        "banger:0000cafe",
    ]);
    let swept = ctx.ok(&["gc"]);
    assert!(swept.contains("bg-bbbbbbbbbb"), "{swept}");
    assert!(!swept.contains("bg-aaaaaaaaaa"), "{swept}");
    assert_eq!(ctx.links("bg-"), ["bg-aaaaaaaaaa"]);
}
