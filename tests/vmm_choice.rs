//! Which VMM runs a VM, as a user sees it: a host where Firecracker's guest
//! prints nothing is found unable (an error naming the fallback with
//! `vmm = firecracker`; QEMU from then on with `auto`, said on every start),
//! the finding is made again on another host kernel, and `vm show`, `vm ls`,
//! `--timings` and `doctor` say which VMM runs. Firecracker is played by the
//! fake VMM (`silent`: the console stays empty, as on this kind of host;
//! `no-guest`: the kernel prints its banner); QEMU is banger-vmm-qemu.

use std::time::{Duration, Instant};

use banger::state::model::{HostFinding, VmmKind};
use banger::state::store::Store;
use banger_testkit::context::{SMALL, faulty_vmm_context};
use banger_testkit::{Args, Need, TestContext, assert_cmd_snapshot, require};

fn store(ctx: &TestContext) -> Store {
    Store::open(&ctx.home.join("banger.db")).expect("open the database")
}

fn finding(ctx: &TestContext) -> Option<HostFinding> {
    store(ctx)
        .host_finding(VmmKind::Firecracker)
        .expect("read the finding")
}

#[test]
fn a_silent_firecracker_guest_is_a_finding_an_error_with_vmm_firecracker_and_qemu_with_auto() {
    let Some(mut ctx) = faulty_vmm_context("silent") else {
        return;
    };
    require!(
        "host",
        Need::Program("qemu-system-x86_64"),
        Need::Program("vhost-device-vsock"),
        Need::File(&banger_testkit::vmm_qemu()),
    );
    ctx.extra_env.push((
        "BANGER_VMM_QEMU".into(),
        banger_testkit::vmm_qemu().display().to_string(),
    ));

    // vmm = firecracker: the finding is an error naming the fallback, made
    // within about the bound, and the VM is stopped.
    let started = Instant::now();
    let out = ctx.run(&Args::new(&["vm", "create", "fc"]).with(SMALL));
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(40), "took {took:?}: {stderr}");
    assert_cmd_snapshot!("firecracker_cannot_run_the_guest", out, &ctx);
    assert_eq!(ctx.show("fc")["state"], "stopped");
    let found = finding(&ctx).expect("a finding is recorded");
    assert!(!found.runs, "{found:?}");
    assert!(
        found.detail.contains("printed nothing on the console"),
        "{found:?}"
    );
    let release = std::process::Command::new("uname")
        .arg("-r")
        .output()
        .expect("uname -r");
    let release = String::from_utf8_lossy(&release.stdout);
    assert!(found.kernel.starts_with(release.trim()), "{found:?}");

    // auto: straight to QEMU, saying why on every start.
    ctx.set_vmm("auto");
    for name in ["q1", "q2"] {
        let out =
            ctx.run(&Args::new(&["vm", "create", name, "--no-wait", "--timings"]).with(SMALL));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "warning: VM {name} runs under QEMU's software CPU, whose boots take tens of seconds: \
                 Firecracker could not run a guest on this host"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("  vmm              qemu"), "{stderr}");
        assert_eq!(ctx.show(name)["vmm"], "qemu");
    }
    let ls = ctx.ok(["vm", "ls"]);
    assert!(ls.contains("running (qemu)"), "{ls}");
    assert!(
        !ls.contains("stopped (qemu)"),
        "fc ran under Firecracker: {ls}"
    );
    let doctor = ctx.run(["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("warn  vmm            auto picks qemu: Firecracker could not run a guest"),
        "{text}"
    );
    assert!(text.contains("ok    qemu"), "{text}");
    ctx.ok(["vm", "rm", "-f", "q1", "q2"]);

    // Another host kernel: the finding no longer holds, Firecracker is tried again.
    store(&ctx)
        .record_host_finding(
            VmmKind::Firecracker,
            &HostFinding {
                kernel: "4.19.0-old #1 SMP".into(),
                ..found
            },
        )
        .expect("rewrite the finding");
    let out = ctx.run(&Args::new(&["vm", "create", "again", "--no-wait"]).with(SMALL));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("QEMU"), "{stderr}");
    assert_eq!(ctx.show("again")["vmm"], "firecracker");
    ctx.ok(["vm", "rm", "-f", "again", "fc"]);
    ctx.assert_nothing_left("after the VMs");
}

#[test]
fn a_guest_that_prints_is_remembered_and_auto_keeps_firecracker() {
    let Some(mut ctx) = faulty_vmm_context("no-guest") else {
        return;
    };
    // The banner shows Firecracker runs guests; the agent never answers.
    let out = ctx.run(&Args::new(&["vm", "create", "seen", "--timeout", "3s"]).with(SMALL));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("did not become ready within 3s"),
        "{stderr}"
    );
    let found = finding(&ctx).expect("a finding is recorded");
    assert!(found.runs, "{found:?}");
    ctx.set_vmm("auto");
    let doctor = ctx.run(["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains(
            "ok    vmm            auto picks firecracker: it has run guests on this kernel"
        ),
        "{text}"
    );
    ctx.ok(["vm", "rm", "-f", "seen"]);
}

#[test]
fn an_unknown_vmm_is_a_usage_error_naming_the_choices() {
    let Some(ctx) = faulty_vmm_context("silent") else {
        return;
    };
    let out = ctx.run(["vm", "create", "x", "--vmm", "kvm"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown VMM \"kvm\": use auto, firecracker or qemu"),
        "{stderr}"
    );
    let out = ctx
        .cmd(["vm", "ls"])
        .env("BANGER_VMM", "kvm")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("BANGER_VMM"), "{stderr}");
    assert_eq!(ctx.ok(["vm", "ls", "-q"]), "");
}
