//! Data in and out of a real guest (the test image under the test VMM):
//! `vm cp` both ways and as tar streams, `vm run --copy/--copy-out`, and
//! `vm ssh-config` for the user's own OpenSSH, and `--publish`ed ports
//! reaching the guest's sshd. One booted VM serves every
//! assertion (a boot costs 15-30 s of software CPU).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use banger_testkit::context::guest_context;
use banger_testkit::netns::{NamedNetns, veth};
use banger_testkit::{Need, TestContext};

/// The guest context (its image is the default), with a TAP pool of one.
#[track_caller]
fn context() -> Option<TestContext> {
    let ctx = guest_context(&[Need::Program("ssh")])?;
    ctx.set_config("tap_pool_size = 1\n");
    Some(ctx)
}

/// A tree with an executable, a symlink, a 3 MB file and a nested file.
fn make_tree(dir: &Path) -> Vec<u8> {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    fs::set_permissions(dir.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("run.sh", dir.join("link")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(dir.join("big"), &big).unwrap();
    fs::write(dir.join("sub/note"), "nested\n").unwrap();
    big
}

/// Asserts two trees hold the same names, kinds, modes, mtimes, link
/// targets and bytes.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut names: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut other: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    other.sort();
    assert_eq!(names, other, "{} vs {}", a.display(), b.display());
    for name in names {
        let (pa, pb) = (a.join(&name), b.join(&name));
        let (ma, mb) = (
            fs::symlink_metadata(&pa).unwrap(),
            fs::symlink_metadata(&pb).unwrap(),
        );
        assert_eq!(ma.file_type(), mb.file_type(), "{}", pb.display());
        if ma.file_type().is_symlink() {
            assert_eq!(fs::read_link(&pa).unwrap(), fs::read_link(&pb).unwrap());
            continue;
        }
        assert_eq!(ma.mode(), mb.mode(), "mode of {}", pb.display());
        if ma.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert_eq!(ma.mtime(), mb.mtime(), "mtime of {}", pb.display());
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{}",
                pb.display()
            );
        }
    }
}

/// `banger ARGS` with `input` on stdin; returns (code, stdout, stderr).
fn with_input(ctx: &TestContext, args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = ctx
        .cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sh -c SCRIPT` in the guest; returns stdout.
fn guest(ctx: &TestContext, script: &str) -> String {
    ctx.ok(&["vm", "ssh", "e1", "--", "sh", "-c", script])
}

#[test]
fn files_and_trees_move_in_and_out_of_a_guest() {
    let Some(ctx) = context() else { return };
    ctx.ok(&[
        "vm",
        "create",
        "e1",
        "--publish",
        "127.0.0.1:2222:22",
        "-p",
        "0.0.0.0:2223:22",
    ]);
    let work = ctx.dir.path().join("work");
    let tree = work.join("tree");
    let big = make_tree(&tree);
    let host = |p: &str| work.join(p).to_str().unwrap().to_owned();

    // A tree in: modes, the symlink as a link, the bytes.
    ctx.ok(&["vm", "cp", &host("tree"), "e1:/root/tree"]);
    let seen = guest(
        &ctx,
        "cd /root/tree && stat -c '%n %a' run.sh && readlink link && ./run.sh \
         && sha256sum big && cat sub/note && ls -a /root | grep -c banger-cp || true",
    );
    let sum = Command::new("sha256sum")
        .arg(tree.join("big"))
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap();
    assert_eq!(
        seen,
        format!("run.sh 755\nrun.sh\nran\n{sum}  big\nnested\n0\n"),
        "guest view"
    );

    // ...and out again into an existing directory, byte for byte.
    fs::create_dir(work.join("back")).unwrap();
    ctx.ok(&["vm", "cp", "e1:/root/tree", &host("back")]);
    assert_same_tree(&tree, &work.join("back/tree"));
    // A single file onto a new name.
    ctx.ok(&["vm", "cp", "e1:/root/tree/big", &host("big.out")]);
    assert!(fs::read(work.join("big.out")).unwrap() == big);

    // Tar streams both ways.
    let stream = Command::new("tar")
        .args(["c", "-C", tree.to_str().unwrap(), "."])
        .output()
        .unwrap()
        .stdout;
    let (code, _, stderr) = with_input(&ctx, &["vm", "cp", "-", "e1:/root/streamed"], &stream);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        guest(&ctx, "cd /root/streamed && ls && readlink link"),
        "big\nlink\nrun.sh\nsub\nrun.sh\n"
    );
    let out = ctx.run(&["vm", "cp", "e1:/root/streamed/sub", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = with_tar(&out.stdout, &["t"]);
    assert_eq!(listing, "sub/\nsub/note\n");

    // Refusals come before anything is written, and name what is wrong.
    let err = ctx.fails(2, &["vm", "cp", &host("tree"), &host("elsewhere")]);
    assert!(err.contains("one side of a copy must be a VM"), "{err}");
    let err = ctx.fails(1, &["vm", "cp", &host("missing"), "e1:/root/x"]);
    assert!(err.contains("missing: no such file or directory"), "{err}");
    let err = ctx.fails(1, &["vm", "cp", "e1:/root/missing", &host("x")]);
    assert!(
        err.contains("VM e1: /root/missing: no such file or directory"),
        "{err}"
    );
    let err = ctx.fails(1, &["vm", "cp", &host("tree"), "e1:/root/tree/big"]);
    assert!(
        err.contains("cannot copy a directory onto the file /root/tree/big"),
        "{err}"
    );
    let err = ctx.fails(1, &["vm", "cp", "e1:/root/tree", &host("big.out")]);
    assert!(
        err.contains("cannot copy a directory onto the file"),
        "{err}"
    );
    let err = ctx.fails(1, &["vm", "cp", &host("tree"), "nosuch:/root"]);
    assert!(err.contains("nosuch"), "{err}");
    assert!(fs::read(work.join("big.out")).unwrap() == big);

    // A full guest disk names the VM and the path, and leaves no partial file.
    guest(
        &ctx,
        "mkdir -p /root/small && mount -t tmpfs -o size=1m tmpfs /root/small",
    );
    let err = ctx.fails(1, &["vm", "cp", &host("tree/big"), "e1:/root/small/big"]);
    assert!(
        err.contains("VM e1 has no space left on its disk for /root/small/big"),
        "{err}"
    );
    assert_eq!(guest(&ctx, "ls -A /root/small"), "");

    // `vm run`: copies in, runs a failing command, still copies out, and
    // returns the command's code.
    let out = ctx.run(&[
        "vm",
        "run",
        "--name",
        "e1",
        "--copy",
        &format!("{}:/root/job", host("tree")),
        "--copy-out",
        &format!("/root/job/out:{}", host("out")),
        "--",
        "sh",
        "-c",
        "mkdir /root/job/out && /root/job/run.sh > /root/job/out/log && exit 4",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(work.join("out/log")).unwrap(), "ran\n");
    // A failed copy is exit 1 with the reason.
    let out = ctx.run(&[
        "vm",
        "run",
        "--name",
        "e1",
        "--copy-out",
        &format!("/root/nothing:{}", host("none")),
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/root/nothing: no such file"));

    // The one-liner: a throwaway VM, a failing command, the output
    // still copied back, the command's code returned, and no VM left.
    let out = ctx.run(&[
        "vm",
        "run",
        "--rm",
        "--work-size",
        "64M",
        "--copy",
        &format!("{}:/root/src", host("tree")),
        "--copy-out",
        &format!("/root/src/out:{}", host("rm-out")),
        "--",
        "sh",
        "-c",
        "mkdir /root/src/out && /root/src/run.sh > /root/src/out/log && exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(work.join("rm-out/log")).unwrap(),
        "ran\n"
    );
    assert_eq!(ctx.ok(&["vm", "ls", "-q"]).trim(), "e1", "--rm left its VM");

    // `vm ssh-config` for the user's own OpenSSH, with banger's pinned key.
    let config = work.join("ssh_config");
    fs::write(&config, ctx.ok(&["vm", "ssh-config", "e1"])).unwrap();
    let ssh = |host: &str| {
        ctx.netns
            .command("ssh")
            .args([
                "-F",
                config.to_str().unwrap(),
                "-o",
                "BatchMode=yes",
                host,
                "true",
            ])
            .output()
            .unwrap()
    };
    for name in ["e1", "e1.vm"] {
        let out = ssh(name);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let known_hosts = ctx.home.join("ssh/known_hosts");
    let pinned = fs::read_to_string(&known_hosts).unwrap();
    let other = other_host_key(&ctx);
    let changed: String = pinned
        .lines()
        .map(|l| {
            let names = l.split_whitespace().next().unwrap();
            format!("{names} {other}\n")
        })
        .collect();
    fs::write(&known_hosts, changed).unwrap();
    let out = ssh("e1");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(&known_hosts, pinned).unwrap();

    // Published ports reach the guest's sshd: from the host on 127.0.0.1,
    // and from another machine through the host's address.
    assert_eq!(ssh_banner(&ctx.netns, "127.0.0.1:2222"), "SSH-2.0-");
    let outside = NamedNetns::new("outside");
    veth(&ctx.netns.name, "bgt-up", &outside.name, "bgt-lan");
    ctx.sh(&["ip", "addr", "add", "192.0.2.1/24", "dev", "bgt-up"]);
    ctx.sh(&["ip", "link", "set", "bgt-up", "up"]);
    outside.exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "bgt-lan"]);
    outside.exec(&["ip", "link", "set", "bgt-lan", "up"]);
    assert_eq!(ssh_banner(&outside, "192.0.2.1:2223"), "SSH-2.0-");
    // The loopback port is the host's own.
    assert!(connect(&outside, "192.0.2.1:2222").is_err());

    // A stopped VM is refused, naming the way out.
    ctx.ok(&["vm", "stop", "e1", "--force"]);
    let ruleset = ctx.sh(&["nft", "list", "ruleset"]);
    assert!(!ruleset.contains("dport 2222"), "{ruleset}");
    assert!(connect(&ctx.netns, "127.0.0.1:2222").is_err());
    let err = ctx.fails(1, &["vm", "cp", &host("tree"), "e1:/root/again"]);
    assert!(err.contains("banger vm start e1"), "{err}");
}

/// A TCP connection to `addr` from namespace `ns`, with a short timeout.
fn connect(ns: &NamedNetns, addr: &str) -> std::io::Result<TcpStream> {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    ns.spawn(move || {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(stream)
    })
    .join()
    .unwrap()
}

/// The first 8 bytes a server at `addr` sends, as seen from namespace `ns`.
fn ssh_banner(ns: &NamedNetns, addr: &str) -> String {
    let mut stream = connect(ns, addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let mut banner = [0u8; 8];
    stream.read_exact(&mut banner).unwrap();
    String::from_utf8_lossy(&banner).into_owned()
}

/// A fresh ed25519 public key (`ssh-ed25519 AAAA...`), not the guest's.
fn other_host_key(ctx: &TestContext) -> String {
    let key = ctx.dir.path().join("other_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `tar ARGS` reading `input`; returns stdout.
fn with_tar(input: &[u8], args: &[&str]) -> String {
    let mut child = Command::new("tar")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}
