//! The README's main job on a host whose KVM cannot run standard guests
//! (real Firecracker starts, its guest prints nothing): with `vmm = auto`
//! the first `vm run --rm` finds that out within the bound, says so and
//! runs the command under QEMU in the same command; the second goes straight
//! to QEMU, saying why; with `vmm = firecracker` the finding is an error
//! naming the fallback. Skips (saying so) on a host where Firecracker runs
//! guests: there is no fallback to see there.

use std::time::{Duration, Instant};

use banger_testkit::context::guest_context;
use banger_testkit::{Need, firecracker, require};

#[test]
fn vm_run_falls_back_to_qemu_where_firecracker_cannot_run_guests() {
    let fc = firecracker();
    let Some(mut ctx) = guest_context(&[Need::Kvm, Need::File(&fc)]) else {
        return;
    };
    ctx.set_vmm("auto");
    let first = ctx.run(["vm", "run", "--rm", "--timings", "--", "uname", "-a"]);
    let stderr = String::from_utf8_lossy(&first.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&first.stdout).into_owned();
    require!(
        "fallback",
        Need::That(
            !first.status.success() || stderr.contains("starting it under QEMU"),
            "this host's KVM runs guests under Firecracker: there is no fallback to see"
        ),
    );
    assert!(first.status.success(), "{stderr}");
    assert!(stdout.starts_with("Linux "), "{stdout}");
    assert!(
        stderr.contains("Firecracker cannot run guests on this host (its guest printed nothing on the console within 10s")
            && stderr.contains("; starting it under QEMU"),
        "{stderr}"
    );
    assert!(stderr.contains("  vmm              qemu"), "{stderr}");

    let second = ctx.run(["vm", "run", "--rm", "--", "uname", "-r"]);
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert!(second.status.success(), "{stderr}");
    assert!(
        stderr.contains("runs under QEMU's software CPU, whose boots take tens of seconds: Firecracker could not run a guest on this host"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting it under QEMU"), "{stderr}");

    // vmm = firecracker: Firecracker is tried, and the finding is an error.
    ctx.set_vmm("firecracker");
    let started = Instant::now();
    let out = ctx.run(["vm", "create", "fc", "--vcpus", "1", "--memory", "256"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    assert!(
        stderr.contains("Firecracker cannot run VM fc's guest on this host")
            && stderr.contains("--vmm qemu"),
        "{stderr}"
    );
    assert_eq!(ctx.show("fc")["vmm"], "firecracker");
    ctx.ok(["vm", "rm", "fc"]);
    ctx.assert_nothing_left("after the runs");
}
