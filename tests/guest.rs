//! A real guest end to end: the image `banger image build` makes, booted by
//! the test VMM (QEMU behind Firecracker's API), reached over vsock and SSH.
//! Slow (software CPU): a few VMs, each doing as much as it can.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_testkit::context::guest_context;
use banger_testkit::image::guest_image;
use banger_testkit::netns::{NamedNetns, veth};
use banger_testkit::{Need, TestContext, require, vmlinux};

/// The guest context, with a TAP pool of two.
#[track_caller]
fn context() -> Option<TestContext> {
    let ctx = guest_context(&[])?;
    ctx.set_config("tap_pool_size = 2\n");
    Some(ctx)
}

/// `banger ARGS` with `input` on stdin; returns (code, stdout, stderr).
fn run_with_input(ctx: &TestContext, args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = ctx
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TCP server in a namespace of its own, reachable from the test's
/// namespace only through a veth: it answers each connection with the
/// address it saw.
struct Outside {
    server: std::process::Child,
    /// Deleted on drop, after the server is killed.
    _netns: NamedNetns,
}

impl Outside {
    fn new(ctx: &TestContext) -> Self {
        let netns = NamedNetns::named(format!("{}-out", ctx.netns.name));
        veth(&ctx.netns.name, "veth-out", &netns.name, "veth-in");
        ctx.sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "veth-out"]);
        ctx.sh(&["ip", "link", "set", "veth-out", "up"]);
        netns.exec(&["ip", "addr", "add", "198.51.100.2/24", "dev", "veth-in"]);
        netns.exec(&["ip", "link", "set", "veth-in", "up"]);
        let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                      s.bind(('198.51.100.2',8080))\ns.listen()\nwhile True:\n c,a=s.accept()\n c.sendall((a[0]+'\\n').encode())\n c.close()\n";
        let server = netns
            .command("python3")
            .args(["-c", script])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self {
            server,
            _netns: netns,
        }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.server.kill().ok();
        self.server.wait().ok();
    }
}

#[test]
fn a_guest_runs_commands_keeps_its_work_disk_and_shuts_down_cleanly() {
    let Some(ctx) = context() else { return };

    // First run: create, boot, wait for agent and SSH, run the command.
    let started = Instant::now();
    let out = ctx.run(&[
        "vm",
        "run",
        "--name",
        "e1",
        "--work-size",
        "2G",
        "--timings",
        "--",
        "cat",
        "/etc/hostname",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "e1\n");
    eprintln!(
        "first `vm run` took {:.1}s; stages:\n{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(stderr.contains("ready"), "{stderr}");

    // Exit codes and stdin pass through ssh.
    assert_eq!(
        ctx.run(&["vm", "ssh", "e1", "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let (code, stdout, _) = run_with_input(&ctx, &["vm", "ssh", "e1", "--", "cat"], "hi\n");
    assert_eq!((code, stdout.as_str()), (0, "hi\n"));

    // /root is the work disk, grown to --work-size.
    let mounted = ctx.ok(&[
        "vm",
        "ssh",
        "e1",
        "--",
        "findmnt",
        "-n",
        "-o",
        "SOURCE,SIZE",
        "-b",
        "/root",
    ]);
    let mut fields = mounted.split_whitespace();
    assert_eq!(fields.next(), Some("/dev/vdb"), "{mounted}");
    let size: u64 = fields.next().unwrap().parse().unwrap();
    assert!(
        size > 1900 << 20 && size <= 2 << 30,
        "work disk is {size} bytes"
    );
    ctx.ok(&[
        "vm",
        "ssh",
        "e1",
        "--",
        "sh",
        "-c",
        "echo kept > /root/file && echo mine > /etc/banger-mark && sync",
    ]);
    // With neither device-mapper nor reflink (this host's ext4), the root
    // is the image's rootfs, read-only, under the VM's own upper disk.
    let dm = std::path::Path::new("/dev/mapper/control").exists();
    let strategy = ctx.show("e1")["cow_strategy"].clone();
    if !dm {
        assert_eq!(strategy, "overlay");
        let root = ctx.ok(&[
            "vm", "ssh", "e1", "--", "findmnt", "-n", "-o", "FSTYPE", "/",
        ]);
        assert_eq!(root.trim(), "overlay");
    }
    let machine_id = ctx.ok(&["vm", "ssh", "e1", "--", "cat", "/etc/machine-id"]);
    assert!(
        machine_id.trim().len() == 32 && machine_id.trim().chars().all(|c| c.is_ascii_hexdigit()),
        "{machine_id}"
    );

    // The VM's name resolves in the guest and on the host (the sidecar's DNS).
    let vm = ctx.json(&["vm", "show", "e1", "--json"]);
    let ip = vm["ip"].as_str().unwrap().to_owned();
    let in_guest = ctx.ok(&["vm", "ssh", "e1", "--", "getent", "hosts", "e1.vm"]);
    assert!(in_guest.starts_with(&ip), "{in_guest}");
    let on_host = ctx.sh(&["dig", "+short", "@172.30.0.1", "e1.vm"]);
    assert_eq!(on_host.trim(), ip);

    // NAT: the guest reaches a server in another namespace, which sees the host's address.
    let _outside = Outside::new(&ctx);
    let seen = ctx.ok(&[
        "vm",
        "ssh",
        "e1",
        "--",
        "bash",
        "-c",
        "exec 3<>/dev/tcp/198.51.100.2/8080; cat <&3",
    ]);
    assert_eq!(seen.trim(), "198.51.100.1");

    // Stop ends by Ctrl-Alt-Del within its timeout, no signals needed.
    let stop = ctx.run(&["vm", "stop", "e1", "--timeout", "120s"]);
    let stop_err = String::from_utf8_lossy(&stop.stderr);
    assert!(stop.status.success(), "{stop_err}");
    assert!(stop_err.contains("shut down"), "{stop_err}");

    // The work disk and the root disk's changes survive a stop and start,
    // and so does the machine-id the VM got on its first boot.
    ctx.ok(&["vm", "start", "e1"]);
    assert_eq!(
        ctx.ok(&["vm", "ssh", "e1", "--", "cat", "/etc/machine-id"]),
        machine_id
    );
    assert_eq!(
        ctx.ok(&[
            "vm",
            "ssh",
            "e1",
            "--",
            "cat",
            "/root/file",
            "/etc/banger-mark"
        ]),
        "kept\nmine\n"
    );
    ctx.ok(&["vm", "stop", "e1", "--force"]);
    let stopped = ctx.run(&["vm", "ssh", "e1", "--", "true"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("banger vm start e1"));

    // A second VM of the image sees none of e1's writes, and the image's
    // rootfs is untouched by both.
    let rootfs = ctx.home.join("images/base/rootfs.ext4");
    let before = ctx.sh(&["sha256sum", rootfs.to_str().unwrap()]);
    ctx.ok(&["vm", "create", "e2", "--no-start"]);
    // Its host key is banger's, pinned before it ever booted.
    let e2 = ctx.show("e2");
    let vm_dir = ctx.home.join("vms").join(e2["id"].as_str().unwrap());
    let made = std::fs::read_to_string(vm_dir.join("ssh_host_ed25519_key.pub")).unwrap();
    let key = made.split_whitespace().nth(1).unwrap().to_owned();
    let known = std::fs::read_to_string(ctx.home.join("ssh/known_hosts")).unwrap();
    for host in [e2["ip"].as_str().unwrap(), "e2.vm"] {
        assert!(
            known.lines().any(|l| l
                .split(' ')
                .next()
                .is_some_and(|hosts| hosts.split(',').any(|h| h == host))
                && l.contains(&key)),
            "{host} is not pinned before the first boot:\n{known}"
        );
    }
    ctx.ok(&["vm", "start", "e2"]);
    let absent = ctx.run(&["vm", "ssh", "e2", "--", "cat", "/etc/banger-mark"]);
    assert_eq!(absent.status.code(), Some(1), "e2 sees e1's write");
    let other_id = ctx.ok(&["vm", "ssh", "e2", "--", "cat", "/etc/machine-id"]);
    assert_ne!(
        other_id, machine_id,
        "two VMs of one image share a machine-id"
    );
    let presented = ctx.ok(&[
        "vm",
        "ssh",
        "e2",
        "--",
        "cat",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    ]);
    assert!(presented.contains(&key), "{presented}");
    let others = ctx.ok(&[
        "vm",
        "ssh",
        "e2",
        "--",
        "sh",
        "-c",
        "ls /etc/ssh/ | grep -c '^ssh_host_' ; stat -c %a /etc/ssh/ssh_host_ed25519_key",
    ]);
    assert_eq!(
        others, "2\n600\n",
        "the guest holds only banger's host key, private to root"
    );
    ctx.ok(&["vm", "stop", "e2", "--force"]);
    assert_eq!(ctx.sh(&["sha256sum", rootfs.to_str().unwrap()]), before);

    // A guest presenting another host key than the one pinned is refused.
    let other = banger_testkit::ssh_keygen(&ctx.dir.path().join("other_host_key"));
    std::fs::write(
        vm_dir.join("ssh_host_ed25519_key.pub"),
        format!("{other}\n"),
    )
    .unwrap();
    let refused = ctx.run(&["vm", "start", "e2"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("host key mismatch"), "{stderr}");
}

#[test]
fn run_rm_leaves_nothing_behind() {
    let Some(ctx) = context() else { return };
    let (code, stdout, stderr) = run_with_input(
        &ctx,
        &[
            "vm",
            "run",
            "--rm",
            "--name",
            "e2",
            "--",
            "sh",
            "-c",
            "cat; exit 3",
        ],
        "piped\n",
    );
    assert_eq!((code, stdout.as_str()), (3, "piped\n"), "{stderr}");
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "");
    assert_eq!(std::fs::read_dir(ctx.home.join("vms")).unwrap().count(), 0);
    assert!(ctx.links("bg-").is_empty(), "{:?}", ctx.links("bg-"));
    let rules = ctx.sh(&["nft", "list", "ruleset"]);
    assert!(!rules.contains("banger:"), "{rules}");
    assert!(ctx.vmms_gone(), "VMMs left: {:?}", ctx.vmms());
}

#[test]
fn the_first_vm_on_a_fresh_host_builds_the_default_image() {
    let kernel = vmlinux();
    require!("guest", Need::Root, Need::File(&kernel));
    // Reuse the downloads and base system cached by the shared guest image's build.
    let Some(image) = guest_image("guest") else {
        return;
    };
    let mut ctx = TestContext::on_qemu();
    ctx.extra_env
        .push(("BANGER_AGENT".into(), image.agent.display().to_string()));
    assert_eq!(ctx.ok(&["image", "ls", "-q"]), "");
    std::os::unix::fs::symlink(image.cache_dir(), ctx.home.join("cache")).unwrap();

    let out = ctx.run(&["vm", "create", "first", "--no-start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("no image yet: building"), "{stderr}");
    assert_eq!(ctx.ok(&["image", "ls", "-q"]), "default\n");
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]), "first\n");
    let image = ctx.json(&["image", "show", "default", "--json"]);
    assert_eq!(image["default"], true);
    assert!(
        image["manifest"]["files"]["rootfs.ext4"]["sha256"].is_string(),
        "{image}"
    );
    // Once is enough: the next VM uses it.
    let again = ctx.run(&["vm", "create", "second", "--no-start"]);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("building"));
}
