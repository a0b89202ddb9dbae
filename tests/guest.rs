//! A real guest end to end: the image `banger image build` makes, booted by
//! the test VMM (QEMU behind Firecracker's API), reached over vsock and SSH.
//! Slow (software CPU): a few VMs, each doing as much as it can.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{TestContext, eventually, skip_unless, vmlinux};

fn shim() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_banger")).with_file_name("vmm-shim")
}

/// The statically linked agent scripts/test.sh builds (BANGER_AGENT).
fn agent() -> Option<PathBuf> {
    std::env::var_os("BANGER_AGENT").map(PathBuf::from)
}

fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// Builds the image once per agent binary and image source, through the CLI,
/// in a banger home kept under the target dir; later runs reuse it.
fn built_image() -> &'static Path {
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let agent = agent().unwrap();
        let mut key = std::fs::read(&agent).unwrap();
        for dir in ["src/host/image", "scripts/guest"] {
            let mut files: Vec<_> =
                std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect();
            files.sort();
            for file in files {
                key.extend(std::fs::read(file).unwrap());
            }
        }
        let digest = format!("{:016x}", fnv1a(&key));
        let home = common::deps().join(format!("../test-images/guest-{digest}"));
        let image = home.join("images/base");
        if !image.join("image.json").exists() {
            std::fs::create_dir_all(&home).unwrap();
            std::fs::write(home.join("config.toml"), "").unwrap();
            let started = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_banger"))
                .args(["image", "build", "base"])
                .env("BANGER_HOME", &home)
                .env("BANGER_RUN_DIR", home.join("run"))
                .env("BANGER_CONFIG", home.join("config.toml"))
                .env("BANGER_AGENT", &agent)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "image build failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            eprintln!(
                "built the guest image in {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
        image
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn context() -> Option<TestContext> {
    if skip_unless(
        "guest",
        &[
            &vmlinux(),
            &shim(),
            Path::new("/usr/bin/qemu-system-x86_64"),
        ],
    ) {
        return None;
    }
    if agent().is_none() || !on_path("vhost-device-vsock") {
        eprintln!(
            "skipping guest test: needs BANGER_AGENT and vhost-device-vsock on PATH (run scripts/test.sh)"
        );
        return None;
    }
    let image = built_image();
    let ctx = TestContext::new(&shim());
    ctx.set_config("tap_pool_size = 2\n");
    let file = |name: &str| image.join(name).to_str().unwrap().to_owned();
    ctx.ok(&[
        "image",
        "import",
        "base",
        "--kernel",
        &file("vmlinux"),
        "--rootfs",
        &file("rootfs.ext4"),
        "--initrd",
        &file("initrd.img"),
        "--work-seed",
        &file("work-seed.ext4"),
    ]);
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
    netns: String,
    server: std::process::Child,
}

impl Outside {
    fn new(ctx: &TestContext) -> Self {
        let netns = format!("{}-out", ctx.netns);
        let ip = |args: &[&str]| {
            assert!(
                Command::new("ip").args(args).status().unwrap().success(),
                "ip {args:?}"
            )
        };
        ip(&["netns", "add", &netns]);
        ip(&[
            "link", "add", "veth-out", "netns", &ctx.netns, "type", "veth", "peer", "name",
            "veth-in", "netns", &netns,
        ]);
        ctx.sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "veth-out"]);
        ctx.sh(&["ip", "link", "set", "veth-out", "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "veth-in",
        ]);
        ip(&["-n", &netns, "link", "set", "veth-in", "up"]);
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        let script = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                      s.bind(('198.51.100.2',8080))\ns.listen()\nwhile True:\n c,a=s.accept()\n c.sendall((a[0]+'\\n').encode())\n c.close()\n";
        let server = Command::new("ip")
            .args(["netns", "exec", &netns, "python3", "-c", script])
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self { netns, server }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        self.server.kill().ok();
        self.server.wait().ok();
        Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status()
            .ok();
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
        "echo kept > /root/file && sync",
    ]);

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

    // The work disk survives a stop and start.
    ctx.ok(&["vm", "start", "e1"]);
    assert_eq!(
        ctx.ok(&["vm", "ssh", "e1", "--", "cat", "/root/file"]),
        "kept\n"
    );
    ctx.ok(&["vm", "stop", "e1", "--force"]);
    let stopped = ctx.run(&["vm", "ssh", "e1", "--", "true"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stopped.stderr).contains("banger vm start e1"));
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
    let vmm_alive = || {
        ctx.processes().into_iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(10).any(|w| w == b"--api-sock"))
        })
    };
    assert!(eventually(Duration::from_secs(5), || !vmm_alive()));
}

#[test]
fn the_first_vm_on_a_fresh_host_builds_the_default_image() {
    if skip_unless("guest", &[&vmlinux(), Path::new("/usr/sbin/debootstrap")]) {
        return;
    }
    let Some(agent) = agent() else {
        eprintln!("skipping: needs BANGER_AGENT (run scripts/test.sh)");
        return;
    };
    // Reuse the downloads and base system cached by the shared guest image's build.
    let shared_cache = built_image()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("cache");
    let mut ctx = TestContext::new(&shim());
    ctx.extra_env
        .push(("BANGER_AGENT".into(), agent.display().to_string()));
    assert_eq!(ctx.ok(&["image", "ls", "-q"]), "");
    std::os::unix::fs::symlink(&shared_cache, ctx.home.join("cache")).unwrap();

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
