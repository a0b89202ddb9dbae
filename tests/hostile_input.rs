//! Hostile input through the real CLI: every command and flag fed empty,
//! overlong and unicode names, `../` paths, shell metacharacters, negative and
//! overflowing numbers, malformed sizes, durations and config files, and image
//! files that are directories, devices or symlinks to them. Each is refused
//! with exit 1 or 2 and a message naming the value, and creates nothing. Valid
//! paths full of shell metacharacters go through every tool banger runs
//! without any of them reaching a shell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use banger_testkit::context::{entries, firecracker_context as context};
use banger_testkit::{TestContext, make_ext4, vmlinux};

/// Shell payloads: any shell that sees one of these creates a file named
/// `pwned*` in the command's working directory.
const PAYLOADS: [&str; 4] = [
    "$(touch pwned1)",
    "x;touch pwned2",
    "`touch pwned3`",
    "x|touch pwned4",
];

/// What a refused command must leave as it found: rows, files, TAPs.
#[derive(Debug, PartialEq)]
struct Snapshot {
    vms: String,
    images: String,
    vm_dirs: Vec<String>,
    image_dirs: Vec<String>,
    taps: Vec<String>,
    cwd: Vec<String>,
}

fn snapshot(ctx: &TestContext, cwd: &Path) -> Snapshot {
    Snapshot {
        vms: ctx.ok(&["vm", "ls", "-q"]),
        images: ctx.ok(&["image", "ls", "-q"]),
        vm_dirs: entries(&ctx.home.join("vms")),
        image_dirs: entries(&ctx.home.join("images")),
        taps: ctx.links("bg"),
        cwd: entries(cwd),
    }
}

/// One refused invocation: arguments, extra environment, and the text its
/// error must contain (the offending value, or the part of it banger shows).
struct Case {
    args: Vec<String>,
    env: Vec<(String, String)>,
    names: String,
}

fn case(args: &[&str], names: &str) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        names: names.to_owned(),
    }
}

fn with_env(mut c: Case, key: &str, value: &str) -> Case {
    c.env.push((key.to_owned(), value.to_owned()));
    c
}

/// Runs `c` in `cwd`; returns a description of what was wrong, if anything.
fn check(ctx: &TestContext, cwd: &Path, c: &Case) -> Option<String> {
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let mut cmd = ctx.cmd(&args);
    cmd.current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            return Some(format!("{:?} {:?}: hung", c.env, c.args));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if !matches!(code, Some(1 | 2)) {
        return Some(format!(
            "{:?} {:?}: exit {code:?}, stderr: {stderr}",
            c.env, c.args
        ));
    }
    if !stderr.contains(&c.names) {
        return Some(format!(
            "{:?} {:?}: exit {code:?}, stderr does not name {:?}: {stderr}",
            c.env, c.args, c.names
        ));
    }
    None
}

struct Files {
    dir: PathBuf,
}

impl Files {
    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }
}

/// Image inputs that are not what they claim: a directory, devices,
/// symlinks to those, a file that is not ELF, a `../` path to nowhere.
fn bad_files(ctx: &TestContext) -> (Files, Vec<String>) {
    let dir = ctx.dir.path().join("files");
    std::fs::create_dir_all(dir.join("adir")).unwrap();
    std::fs::write(dir.join("bzImage"), b"MZ\x00\x00 this is not an ELF kernel").unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.join("to-zero")).unwrap();
    std::os::unix::fs::symlink("/dev/null", dir.join("to-null")).unwrap();
    std::os::unix::fs::symlink(dir.join("adir"), dir.join("to-dir")).unwrap();
    std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling")).unwrap();
    let files = Files { dir };
    let bad = vec![
        files.path("adir"),
        "/dev/null".into(),
        "/dev/zero".into(),
        files.path("to-zero"),
        files.path("to-null"),
        files.path("to-dir"),
        files.path("dangling"),
        files.path("bzImage"),
        files.path("empty"),
        format!("{}/../../../../nonexistent/vmlinux", files.dir.display()),
        files.path(PAYLOADS[0]),
    ];
    (files, bad)
}

#[test]
fn hostile_arguments_are_refused_by_name_and_create_nothing() {
    let Some(ctx) = context() else { return };
    let cwd = ctx.dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let before = snapshot(&ctx, &cwd);
    let (files, bad_paths) = bad_files(&ctx);
    let rootfs = ctx.dir.path().join("good-rootfs.ext4");
    make_ext4(&rootfs, 16);
    let rootfs = rootfs.to_str().unwrap().to_owned();
    let kernel = vmlinux().to_str().unwrap().to_owned();

    let long = "a".repeat(300);
    let mut bad_names: Vec<(String, String)> = vec![
        (String::new(), "\"\"".into()),
        (long.clone(), "a".repeat(60)),
        ("ünïcødé".into(), "ünïcødé".into()),
        ("名前".into(), "名前".into()),
        ("../etc".into(), "../etc".into()),
        ("a/b".into(), "a/b".into()),
        ("UPPER".into(), "UPPER".into()),
        ("with space".into(), "with space".into()),
        ("new\nline".into(), "new\\nline".into()),
        ("trailing-".into(), "trailing-".into()),
    ];
    bad_names.extend(PAYLOADS.iter().map(|p| (p.to_string(), p.to_string())));

    let mut cases = Vec::new();
    // Names, wherever a command takes one.
    for (name, shown) in &bad_names {
        let n = name.as_str();
        for args in [
            vec!["vm", "create", n, "--no-start"],
            vec!["vm", "create", "--image", n, "--no-start"],
            vec!["vm", "run", "--name", n, "--", "true"],
            vec!["vm", "start", n],
            vec!["vm", "stop", n],
            vec!["vm", "restart", n],
            vec!["vm", "rm", n],
            vec!["vm", "show", n],
            vec!["vm", "ssh", n, "--", "true"],
            vec!["vm", "logs", n],
            vec!["image", "build", n],
            vec![
                "image", "import", n, "--kernel", &kernel, "--rootfs", &rootfs,
            ],
            vec!["image", "show", n],
            vec!["image", "rm", n],
            vec!["image", "default", n],
            vec!["bench", "create", "--runs", "1", "--image", n],
        ] {
            // A name starting with '-' is an option to clap; `--` makes it a value.
            cases.push(case(&args, shown));
        }
    }
    // Numbers, sizes and durations, on every flag that takes one.
    let numbers = [
        "-1",
        "0",
        "1.5",
        "0x10",
        "99999999999999999999999",
        "18446744073709551616",
        "",
        " ",
        "1e3",
    ];
    for value in numbers {
        cases.push(case(&["vm", "create", "n1", "--vcpus", value], value));
        cases.push(case(&["bench", "create", "--runs", value], value));
    }
    let sizes = [
        "-1",
        "-1G",
        "0",
        "1.5G",
        "8X",
        "G",
        "",
        "99999999999999999999",
        "17179869184G",
        "16777216T",
        "8 G G",
        "٨G",
    ];
    for value in sizes {
        for flag in ["--memory", "--disk-size", "--work-size"] {
            cases.push(case(&["vm", "create", "n1", flag, value], value));
            cases.push(case(&["vm", "run", "--name", "n1", flag, value], value));
        }
        cases.push(case(&["image", "build", "i1", "--size", value], value));
    }
    let durations = [
        "-1s",
        "0s",
        "5",
        "1y",
        "s",
        "",
        "1.5h",
        "99999999999999999999s",
        "999999999999h",
        "1h-1m",
        "10ms",
    ];
    for value in durations {
        cases.push(case(&["vm", "create", "n1", "--ttl", value], value));
        cases.push(case(&["vm", "create", "n1", "--timeout", value], value));
        cases.push(case(&["vm", "run", "--ttl", value], value));
        cases.push(case(&["vm", "start", "n1", "--timeout", value], value));
        cases.push(case(&["vm", "stop", "n1", "--timeout", value], value));
    }
    // Image files that are directories, devices, symlinks to those, not ELF.
    for bad in &bad_paths {
        let b = bad.as_str();
        cases.push(case(
            &["image", "import", "i1", "--kernel", b, "--rootfs", &rootfs],
            b,
        ));
        cases.push(case(
            &["image", "import", "i1", "--kernel", &kernel, "--rootfs", b],
            b,
        ));
        for flag in ["--initrd", "--work-seed"] {
            // Any non-empty file may be an initramfs.
            if flag == "--initrd" && b.ends_with("bzImage") {
                continue;
            }
            cases.push(case(
                &[
                    "image", "import", "i1", "--kernel", &kernel, "--rootfs", &rootfs, flag, b,
                ],
                b,
            ));
        }
        cases.push(case(&["image", "build", "i1", "--kernel", b], b));
        if !b.ends_with("bzImage") {
            cases.push(case(
                &["image", "build", "i1", "--kernel", &kernel, "--initrd", b],
                b,
            ));
        }
    }
    // Build options that would reach debootstrap or apt.
    for payload in PAYLOADS {
        cases.push(case(&["image", "build", "i1", "--suite", payload], payload));
        cases.push(case(
            &["image", "build", "i1", "--packages", payload],
            payload,
        ));
    }
    cases.push(case(&["image", "build", "i1", "--suite", "../x"], "../x"));
    cases.push(case(
        &["image", "build", "i1", "--suite", "--no-check-gpg"],
        "--no-check-gpg",
    ));
    cases.push(case(
        &[
            "image",
            "build",
            "i1",
            "--packages",
            "vim,--allow-unauthenticated",
        ],
        "--allow-unauthenticated",
    ));
    // Other words.
    for payload in ["zsh;touch pwned5", "ünï", ""] {
        cases.push(case(&["completions", payload], payload));
    }
    cases.push(case(&["vm", "frobnicate"], "frobnicate"));
    cases.push(case(
        &["vm", "create", "n1", "--no-such-flag"],
        "--no-such-flag",
    ));
    cases.push(case(&["vm", "ls", "--json", "-q"], "--json"));

    // Malformed config files, and config files that are not files.
    let config_dir = ctx.dir.path().join("configs");
    std::fs::create_dir_all(&config_dir).unwrap();
    let configs = [
        ("syntax", "bridge = ", "syntax"),
        ("type", "vcpus = \"four\"", "vcpus"),
        ("unknown", "colour = \"red\"", "colour"),
        ("bridge", "bridge = \"$(touch pwned6)\"", "$(touch pwned6)"),
        (
            "long-bridge",
            "bridge = \"abcdefghijklmnopq\"",
            "abcdefghijklmnopq",
        ),
        ("subnet", "subnet = \"999.1.1.0/24\"", "999.1.1.0/24"),
        ("prefix", "subnet = \"10.0.0.0/40\"", "10.0.0.0/40"),
        ("domain", "domain = \"../vm\"", "../vm"),
        ("memory", "memory = \"-2G\"", "-2G"),
        ("work", "work_size = \"lots\"", "lots"),
        ("grace", "sidecar_grace = \"forever\"", "forever"),
        ("port", "dns_port = 70000", "70000"),
        ("pool", "tap_pool_size = -1", "tap_pool_size"),
        ("vcpus", "vcpus = 1000", "1000"),
        ("binary", "\u{0}\u{1}\u{2}", "config"),
    ];
    for (file, text, names) in configs {
        let path = config_dir.join(format!("{file}.toml"));
        std::fs::write(&path, text).unwrap();
        cases.push(with_env(
            case(&["vm", "create", "n1", "--no-start"], names),
            "BANGER_CONFIG",
            path.to_str().unwrap(),
        ));
    }
    for path in [
        config_dir.to_str().unwrap(),
        "/dev/zero",
        &files.path("to-zero"),
        "/nonexistent/config.toml",
    ] {
        cases.push(with_env(
            case(&["vm", "create", "n1", "--no-start"], path),
            "BANGER_CONFIG",
            path,
        ));
    }
    // Environment overrides.
    for (key, value) in [
        ("BANGER_SIDECAR_GRACE", "-5s"),
        ("BANGER_BUSY_TIMEOUT", "$(touch pwned7)"),
    ] {
        cases.push(with_env(case(&["vm", "ls"], value), key, value));
    }
    // A VMM binary that is a directory, a device, or not there.
    for value in ["/tmp", "/dev/null", "/nonexistent/firecracker"] {
        cases.push(with_env(
            case(&["vm", "create", "n1", "--no-wait"], value),
            "BANGER_FIRECRACKER",
            value,
        ));
    }

    eprintln!("{} hostile invocations", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        if let Some(failure) = check(&ctx, &cwd, c) {
            failures.push(failure);
        }
        // Check the state only now and then: it costs three commands.
        if failures.is_empty() && (c.args[0] == "image" || !c.env.is_empty()) {
            let now = snapshot(&ctx, &cwd);
            if now != before {
                failures.push(format!("{:?} {:?} left {now:?}", c.env, c.args));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile invocations misbehaved:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(snapshot(&ctx, &cwd), before);
}

/// Renames `ctx`'s state roots to paths full of shell metacharacters and spaces.
fn hostile_roots(ctx: &mut TestContext) {
    let root = ctx.dir.path().join("x $(touch pwned1); `touch pwned3` & y");
    ctx.home = root.join("home");
    ctx.run_dir = root.join("run");
}

#[test]
fn metacharacters_in_paths_reach_no_shell() {
    let Some(mut ctx) = context() else { return };
    hostile_roots(&mut ctx);
    let cwd = ctx.dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    // Image files whose names are shell payloads, imported under a home
    // whose path is one: every tool banger runs sees these paths.
    let files = ctx.dir.path().join(format!("in {}", PAYLOADS[1]));
    std::fs::create_dir_all(&files).unwrap();
    let kernel = files.join(PAYLOADS[0]);
    std::fs::copy(vmlinux(), &kernel).unwrap();
    let rootfs = files.join(PAYLOADS[2]);
    make_ext4(&rootfs, 32);
    let run = |args: &[&str]| {
        let out = ctx.cmd(args).current_dir(&cwd).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&[
        "image",
        "import",
        "evil",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--default",
    ]);
    run(&["vm", "create", "m1", "--no-start", "--work-size", "128M"]);
    run(&["vm", "create", "m2", "--no-wait", "--work-size", "64M"]);
    run(&["vm", "show", "m2"]);
    run(&["vm", "stop", "m2", "--force"]);
    run(&["vm", "rm", "m1", "m2"]);
    run(&["gc"]);
    run(&["image", "rm", "evil"]);
    assert_eq!(entries(&cwd), Vec::<String>::new(), "a shell ran a payload");
    assert_eq!(run(&["vm", "ls", "-q"]), "");
    assert_eq!(entries(&ctx.home.join("vms")), Vec::<String>::new());
    assert_eq!(ctx.links("bg"), Vec::<String>::new());
}

#[test]
fn an_image_file_that_is_not_a_regular_file_is_refused_before_anything_is_made() {
    let Some(ctx) = banger_testkit::context::context_without_kvm() else {
        return;
    };
    let rootfs = ctx.home.join("images/base/rootfs.ext4");
    std::fs::remove_file(&rootfs).unwrap();
    ctx.sh(&["mkfifo", &rootfs.display().to_string()]);
    let started = Instant::now();
    let stderr = ctx.fails(1, ["vm", "create", "x", "--no-start"]);
    assert!(started.elapsed() < Duration::from_secs(10), "it hung");
    assert!(
        stderr.contains(&format!(
            "image base is damaged: {} is not a regular file",
            rootfs.display()
        )),
        "{stderr}"
    );
    assert_eq!(ctx.ok(["vm", "ls", "-q"]), "");
    assert!(entries(&ctx.home.join("vms")).is_empty());
}
