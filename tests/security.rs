//! Security properties a user relies on, checked on the real host after a
//! real create: private modes on state, keys, database, run dir and sockets;
//! DNS listening on the bridge address only; NAT rules confined to `inet
//! banger` and naming the VM; and SSH refusing a guest whose host key changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use banger_testkit::context::firecracker_context as context;
use banger_testkit::netns::{NamedNetns, veth};
use banger_testkit::{
    Need, TestContext, create_small, eventually, firecracker, require, ssh_keygen,
};
use serde_json::Value;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `root`, depth first.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

/// Whether another user could reach `path`: every directory from `root`
/// down must let others search it, and the file must let them read or write.
fn world_accessible(root: &Path, path: &Path) -> bool {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if mode(d) & 0o001 == 0 {
            return false;
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    mode(path) & 0o006 != 0
}

#[test]
fn state_keys_database_and_sockets_are_private_after_a_real_create() {
    let Some(ctx) = context() else { return };
    let vm = ctx.json(&create_small("sec1").with(&["--no-wait", "--json"]));
    assert_eq!(vm["state"], "running");
    let id = vm["id"].as_str().unwrap();

    for (path, want) in [
        (ctx.home.clone(), 0o700),
        (ctx.home.join("ssh"), 0o700),
        (ctx.home.join("ssh/id_ed25519"), 0o600),
        (ctx.home.join("banger.db"), 0o600),
        (ctx.home.join("vms").join(id), 0o700),
        (ctx.run_dir.clone(), 0o700),
        (ctx.run_dir.join("vms").join(id), 0o700),
    ] {
        assert_eq!(
            mode(&path),
            want,
            "{} has mode {:o}",
            path.display(),
            mode(&path)
        );
    }
    // Nothing is writable by others anywhere; nothing but the public key
    // and the image files is readable through the private directories.
    let mut sockets = Vec::new();
    for root in [&ctx.home, &ctx.run_dir] {
        for path in walk(root) {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            assert_eq!(
                mode(&path) & 0o002,
                0,
                "{} is world-writable ({:o})",
                path.display(),
                mode(&path)
            );
            assert!(
                !world_accessible(root, &path),
                "{} is reachable by other users",
                path.display()
            );
            if meta.file_type().is_socket() {
                sockets.push(path);
            }
        }
    }
    let names: Vec<_> = sockets
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "api.sock"),
        "no API socket among {sockets:?}"
    );
    ctx.ok(&["vm", "rm", "--force", "sec1"]);
}

/// Local addresses of the listening sockets in the namespace (`ss` flags
/// `-lnu` or `-lnt`), with the owning process.
fn listeners(ctx: &TestContext, flags: &str) -> Vec<(String, String)> {
    ctx.sh(&["ss", flags, "-H", "-p"])
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some((cols.get(3)?.to_string(), cols.get(5..)?.join(" ")))
        })
        .collect()
}

#[test]
fn dns_listens_on_the_bridge_only_and_nat_stays_in_its_table() {
    let Some(ctx) = context() else { return };
    ctx.set_config("tap_pool_size = 2\n");
    let vm = ctx.json(&create_small("sec2").with(&["--no-wait", "--json"]));
    let id = vm["id"].as_str().unwrap().to_owned();
    let ip = vm["ip"].as_str().unwrap().to_owned();
    let tap = format!("bg-{id}");

    // The sidecar started with the VM: its DNS sockets, UDP and TCP, are
    // bound to the bridge address and nothing else listens on IP.
    assert!(
        eventually(Duration::from_secs(10), || {
            listeners(&ctx, "-lnu")
                .iter()
                .any(|(addr, _)| addr.ends_with(":53"))
        }),
        "no DNS listener: {:?}",
        listeners(&ctx, "-lnu")
    );
    for flags in ["-lnu", "-lnt"] {
        let found = listeners(&ctx, flags);
        assert!(!found.is_empty(), "{flags}: no listener");
        for (addr, owner) in &found {
            assert_eq!(addr, "172.30.0.1:53", "{flags}: {owner} listens on {addr}");
        }
    }
    let answer = ctx.sh(&["dig", "+short", "+time=2", "@172.30.0.1", "sec2.vm"]);
    assert_eq!(answer.trim(), ip);

    // NAT: the only table is banger's, and each of its rules names the VM
    // (or, for the host fence, the bridge).
    let ruleset: Value = serde_json::from_str(&ctx.sh(&["nft", "-j", "list", "ruleset"])).unwrap();
    let objects = ruleset["nftables"].as_array().unwrap();
    let tables: Vec<String> = objects
        .iter()
        .filter_map(|o| o.get("table"))
        .map(|t| {
            format!(
                "{} {}",
                t["family"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(tables, vec!["inet banger"], "{ruleset}");
    let rules: Vec<&Value> = objects.iter().filter_map(|o| o.get("rule")).collect();
    assert!(!rules.is_empty(), "no NAT rules: {ruleset}");
    for rule in &rules {
        let text = rule.to_string();
        if rule["comment"] == "banger fence:banger0" {
            assert!(text.contains("banger0"), "{text}");
            continue;
        }
        assert!(
            text.contains(&ip) || text.contains(&tap),
            "rule names neither {ip} nor {tap}: {text}"
        );
    }
    let masquerade: Vec<String> = rules
        .iter()
        .map(|r| r.to_string())
        .filter(|t| t.contains("masquerade"))
        .collect();
    assert_eq!(masquerade.len(), 1, "{ruleset}");
    assert!(masquerade[0].contains(&ip), "{}", masquerade[0]);

    // Stopping removes the VM's rules and leaves the table's other contents alone.
    ctx.ok(&["vm", "stop", "sec2", "--force"]);
    let after = ctx.sh(&["nft", "list", "ruleset"]);
    assert!(
        !after.contains(&ip) && !after.contains(&tap),
        "rules outlived the VM:\n{after}"
    );
    ctx.ok(&["vm", "rm", "sec2"]);
}

/// A stand-in guest: a namespace whose veth is a port of banger's bridge.
struct FakeGuest {
    netns: NamedNetns,
}

impl FakeGuest {
    fn attach(ctx: &TestContext, address: &str) -> Self {
        let netns = NamedNetns::named(format!("{}-g", ctx.netns.name));
        veth(&ctx.netns.name, "vguest", &netns.name, "eth0");
        ctx.sh(&["ip", "link", "set", "vguest", "master", "banger0", "up"]);
        netns.exec(&["ip", "addr", "add", address, "dev", "eth0"]);
        netns.exec(&["ip", "link", "set", "eth0", "up"]);
        Self { netns }
    }

    /// Whether a TCP connection to `addr` succeeds from the guest within 2 s.
    fn connects(&self, addr: &str) -> bool {
        let (host, port) = addr.split_once(':').unwrap();
        let script =
            format!("import socket; socket.create_connection(('{host}', {port}), timeout=2)");
        self.netns
            .command("python3")
            .args(["-c", &script])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }
}

#[test]
fn guests_reach_only_dns_on_the_host() {
    let Some(ctx) = context() else { return };
    ctx.set_config("tap_pool_size = 0\n");
    ctx.ok(&create_small("fenced").with(&["--no-nat", "--no-wait"]));
    // A host service listening on every address, as many do.
    let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                  s.bind(('0.0.0.0',2222))\ns.listen()\nwhile True: s.accept()[0].close()\n";
    let mut service = ctx
        .netns
        .command("python3")
        .args(["-c", script])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let guest = FakeGuest::attach(&ctx, "172.30.0.200/24");
    let reached = guest.connects("172.30.0.1:2222");
    let dns = guest
        .netns
        .command("dig")
        .args(["+short", "+time=2", "+tries=2", "@172.30.0.1", "fenced.vm"])
        .output()
        .unwrap();
    // The host itself still reaches its own service at that address.
    let from_host = ctx.sh(&[
        "python3",
        "-c",
        "import socket; socket.create_connection(('172.30.0.1', 2222), timeout=2); print('ok')",
    ]);
    service.kill().ok();
    service.wait().ok();
    assert!(
        !reached,
        "a guest reached a host service on the bridge address"
    );
    assert!(
        !String::from_utf8_lossy(&dns.stdout).trim().is_empty(),
        "DNS from a guest failed"
    );
    assert_eq!(from_host.trim(), "ok");
    ctx.ok(&["vm", "rm", "--force", "fenced"]);
}

/// A throwaway sshd in the test's namespace, killed on drop.
struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

#[test]
fn a_changed_guest_host_key_is_refused() {
    const SSHD: &str = "/usr/sbin/sshd";
    require!(
        "host",
        Need::Root,
        Need::That(
            Path::new(SSHD).exists(),
            "no /usr/sbin/sshd (it comes from the openssh-server package)"
        ),
    );
    let ctx = TestContext::new(&firecracker());
    let dir = ctx.dir.path();
    let pinned = ssh_keygen(&dir.join("pinned_host_key"));
    let presented = ssh_keygen(&dir.join("presented_host_key"));
    let client_key = dir.join("id_ed25519");
    let client_public = banger::host::ssh::ensure_key(&client_key).unwrap();
    let authorized = dir.join("authorized_keys");
    std::fs::write(&authorized, format!("{client_public}\n")).unwrap();
    // sshd insists on its privilege-separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();

    let host = "127.0.0.7";
    let sshd = Sshd(
        ctx.netns
            .command(SSHD)
            .args(["-D", "-e", "-f", "/dev/null"])
            .arg("-h")
            .arg(dir.join("presented_host_key"))
            .args(["-o", &format!("ListenAddress={host}:22")])
            .args([
                "-o",
                &format!("AuthorizedKeysFile={}", authorized.display()),
            ])
            .args(["-o", "StrictModes=no", "-o", "PidFile=none"])
            .args(["-o", "PermitRootLogin=prohibit-password", "-o", "UsePAM=no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(
        eventually(Duration::from_secs(5), || listeners(&ctx, "-lnt")
            .iter()
            .any(|(addr, _)| addr == &format!("{host}:22"))),
        "sshd did not start"
    );

    let known_hosts = dir.join("known_hosts");
    let ssh = |expect_ok: bool| {
        let args = banger::host::ssh::ssh_args(
            &client_key,
            &known_hosts,
            host,
            Duration::from_secs(10),
            false,
            &["true".into()],
        );
        let out = ctx
            .netns
            .command("ssh")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.success(), expect_ok, "ssh {args:?}: {stderr}");
        stderr
    };
    let pin = |key: &str| {
        banger::host::ssh::pin_host_key(&known_hosts, &[host.into(), "sec.vm".into()], key).unwrap()
    };

    // The guest's key as first pinned; the server now presents another.
    pin(&pinned);
    let before = std::fs::read(&known_hosts).unwrap();
    let stderr = ssh(false);
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert_eq!(
        std::fs::read(&known_hosts).unwrap(),
        before,
        "the pin changed"
    );
    // No pin at all is refused too: nothing is trusted on first use by ssh.
    std::fs::write(&known_hosts, b"").unwrap();
    let stderr = ssh(false);
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert!(std::fs::read(&known_hosts).unwrap().is_empty());
    // The control: pinned to the key it presents, the same command works.
    pin(&presented);
    ssh(true);
    drop(sshd);
}
