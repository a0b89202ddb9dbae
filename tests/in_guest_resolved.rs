//! VM names through systemd-resolved, on a host where it runs
//! (scripts/test-in-guest.sh runs this in a Debian guest): once banger has
//! set up the bridge, `resolvectl query NAME.vm` on the host answers with the
//! VM's address through the sidecar (and no other name of the domain), and
//! when the last VM is gone the routing is gone too. Runs only in the tier's
//! guest: it changes the host's DNS configuration and puts banger's bridge in
//! the host's own network.

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::time::Duration;

use banger_testkit::{Need, TestContext, create_small, eventually, in_guest};

/// `banger ARGS` with `ctx`'s state in the host's own network namespace, where
/// systemd-resolved sees the bridge.
fn banger<A: IntoIterator<Item = S>, S: AsRef<OsStr>>(ctx: &TestContext, args: A) -> Output {
    Command::new(banger_testkit::banger_bin())
        .args(args)
        .env("BANGER_HOME", &ctx.home)
        .env("BANGER_RUN_DIR", &ctx.run_dir)
        .env("BANGER_CONFIG", &ctx.config)
        .env("BANGER_FIRECRACKER", &ctx.vmm)
        .env("BANGER_VMM", "firecracker")
        .env("BANGER_SIDECAR_GRACE", "2s")
        .output()
        .expect("run banger")
}

fn ok<A: IntoIterator<Item = S>, S: AsRef<OsStr>>(ctx: &TestContext, args: A) -> String {
    let out = banger(ctx, args);
    assert!(
        out.status.success(),
        "banger failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `resolvectl ARGS`: (success, stdout and stderr).
fn resolvectl(args: &[&str]) -> (bool, String) {
    let out = Command::new("resolvectl")
        .args(args)
        .output()
        .expect("run resolvectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn resolved_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "systemd-resolved"])
        .status()
        .is_ok_and(|s| s.success())
}

/// A context on the fake VMM with a small image `base` imported and VM
/// `web` created and started in the host's own network; `None` (after saying
/// why) outside the tier's guest or without resolved.
#[track_caller]
fn context_with_web() -> Option<(TestContext, serde_json::Value)> {
    let (kernel, vmm) = (banger_testkit::vmlinux(), banger_testkit::vmm_fake());
    let needs = [
        Need::Root,
        Need::That(
            in_guest::active(),
            "changes the host's DNS (scripts/test-in-guest.sh runs this in a guest)",
        ),
        Need::That(resolved_active(), "systemd-resolved is not running"),
        Need::File(&kernel),
        Need::File(&vmm),
    ];
    if banger_testkit::require("resolved", &needs).is_some() {
        return None;
    }
    let ctx = TestContext::new(&vmm);
    let image = ctx.dir.path().join("base-rootfs.ext4");
    banger_testkit::make_ext4(&image, 64);
    ok(
        &ctx,
        [
            OsStr::new("image"),
            OsStr::new("import"),
            OsStr::new("base"),
            OsStr::new("--kernel"),
            kernel.as_os_str(),
            OsStr::new("--rootfs"),
            image.as_os_str(),
        ],
    );
    let vm = serde_json::from_str(&ok(
        &ctx,
        &create_small("web").with(&["--no-wait", "--json"]),
    ))
    .expect("JSON");
    Some((ctx, vm))
}

/// Waits for `resolvectl query NAME` to answer `ip`; the last output and
/// `resolvectl domain` when it never does.
fn resolves(name: &str, ip: &str) -> Result<(), String> {
    let mut last = String::new();
    let answered = eventually(Duration::from_secs(20), || {
        let (ok, text) = resolvectl(&["query", "--cache=no", name]);
        last = text;
        ok && last.contains(ip)
    });
    if answered {
        return Ok(());
    }
    let (_, domains) = resolvectl(&["domain"]);
    Err(format!(
        "resolvectl query {name} never answered {ip}:\n{last}\nresolvectl domain:\n{domains}"
    ))
}

#[test]
fn vm_names_resolve_on_the_host_through_resolved() {
    let Some((ctx, vm)) = context_with_web() else {
        return;
    };
    let (name, ip) = (
        vm["dns_name"].as_str().expect("a DNS name"),
        vm["ip"].as_str().expect("an IP"),
    );
    assert_eq!(name, "web.vm");
    resolves(name, ip).unwrap_or_else(|e| panic!("{e}"));
    let (_, domains) = resolvectl(&["domain"]);
    assert!(domains.contains("~vm"), "{domains}");
    let (found, text) = resolvectl(&["query", "--cache=no", "nosuch.vm"]);
    assert!(!found, "an unknown VM resolved:\n{text}");
    ok(&ctx, ["vm", "stop", "web"]);
    let (found, text) = resolvectl(&["query", "--cache=no", name]);
    assert!(!found, "a stopped VM resolved:\n{text}");
    // The last VM goes, the sidecar idles out: so does the routing (one
    // test, as both halves share the host's bridge and resolved).
    ok(&ctx, ["vm", "delete", "web"]);
    let mut domains = String::new();
    let unrouted = eventually(Duration::from_secs(20), || {
        domains = resolvectl(&["domain"]).1;
        !domains.contains("~vm")
    });
    assert!(
        unrouted,
        "~vm is still routed to the bridge after the last VM went and the sidecar stopped:\n{domains}"
    );
}
