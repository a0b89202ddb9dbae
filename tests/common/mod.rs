//! Test context for CLI tests: every path in a temp dir, every command in a
//! private network namespace, and a cleanup that kills what the test started
//! and detaches its loop devices even when the test fails.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where scripts/test-deps.sh put the real parts.
pub fn deps() -> PathBuf {
    std::env::var_os("BANGER_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips (returns true after saying why) unless running as root with `needs` present.
pub fn skip_unless(tier: &str, needs: &[&Path]) -> bool {
    if !is_root() {
        eprintln!("skipping {tier} test: needs root");
        return true;
    }
    for path in needs {
        if !path.exists() {
            eprintln!(
                "skipping {tier} test: {} is missing (run scripts/test-deps.sh)",
                path.display()
            );
            return true;
        }
    }
    false
}

/// A context on the real Firecracker with a small image `base` imported,
/// or `None` (after saying why) when this host cannot run Firecracker.
pub fn firecracker_context() -> Option<TestContext> {
    if skip_unless(
        "firecracker",
        &[&firecracker(), &vmlinux(), Path::new("/dev/kvm")],
    ) {
        return None;
    }
    let ctx = TestContext::new(&firecracker());
    ctx.import_image("base");
    Some(ctx)
}

pub fn firecracker() -> PathBuf {
    deps().join("bin/firecracker")
}

pub fn vmlinux() -> PathBuf {
    deps().join("vmlinux")
}

pub struct TestContext {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub run_dir: PathBuf,
    pub config: PathBuf,
    pub netns: String,
    pub vmm: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

impl TestContext {
    /// A fresh banger state in a temp dir, its own network namespace, and
    /// the given VMM binary (real Firecracker or the test shim).
    pub fn new(vmm: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgt")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let home = dir.path().join("home");
        let run_dir = dir.path().join("run");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "tap_pool_size = 0\n").expect("config");
        let netns = format!(
            "bgt-{}",
            &dir.path().file_name().unwrap().to_string_lossy()[3..]
        );
        let status = Command::new("ip")
            .args(["netns", "add", &netns])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {netns}");
        run_in(&netns, &["ip", "link", "set", "lo", "up"]);
        Self {
            home,
            run_dir,
            config,
            netns,
            vmm: vmm.to_owned(),
            extra_env: Vec::new(),
            dir,
        }
    }

    pub fn set_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("config");
    }

    /// `banger ARGS` inside the namespace, with this context's state.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, env!("CARGO_BIN_EXE_banger")]);
        cmd.args(args);
        cmd.env("BANGER_HOME", &self.home)
            .env("BANGER_RUN_DIR", &self.run_dir)
            .env("BANGER_CONFIG", &self.config)
            .env("BANGER_FIRECRACKER", &self.vmm)
            .env("BANGER_SIDECAR_GRACE", "3s")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run banger")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "banger {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs expecting failure with `code`; returns stderr.
    pub fn fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "banger {args:?}: stderr:\n{stderr}"
        );
        stderr
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// Runs a command (not banger) inside the namespace; returns stdout.
    pub fn sh(&self, argv: &[&str]) -> String {
        run_in(&self.netns, argv)
    }

    /// A small ext4 rootfs and the test kernel, imported as `name` (default image).
    pub fn import_image(&self, name: &str) {
        let rootfs = self.dir.path().join(format!("{name}-rootfs.ext4"));
        make_ext4(&rootfs, 64);
        self.ok(&[
            "image",
            "import",
            name,
            "--kernel",
            vmlinux().to_str().unwrap(),
            "--rootfs",
            rootfs.to_str().unwrap(),
        ]);
    }

    /// Loop devices whose backing file lies under this context's dir.
    pub fn loops(&self) -> Vec<String> {
        loops_under(self.dir.path())
    }

    /// Links in the namespace whose names start with `prefix`.
    pub fn links(&self, prefix: &str) -> Vec<String> {
        self.sh(&["ip", "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// PIDs of processes started with this context's run dir in their environment.
    pub fn processes(&self) -> Vec<i32> {
        processes_with_env(&format!("BANGER_RUN_DIR={}", self.run_dir.display()))
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        for pid in self.processes() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .ok();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.processes().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for dev in self.loops() {
            Command::new("losetup").args(["-d", &dev]).status().ok();
        }
        Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status()
            .ok();
    }
}

pub fn run_in(netns: &str, argv: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(argv)
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn make_ext4(path: &Path, mib: u64) {
    let file = std::fs::File::create(path).expect("create");
    file.set_len(mib << 20).expect("size");
    let status = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "test-root"])
        .arg(path)
        .status()
        .expect("mkfs");
    assert!(status.success());
}

pub fn loops_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file"))
            && Path::new(backing.trim()).starts_with(dir)
        {
            found.push(format!("/dev/{name}"));
        }
    }
    found
}

pub fn processes_with_env(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if pid_alive(i64::from(pid))
            && environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes())
        {
            pids.push(pid);
        }
    }
    pids
}

pub fn pid_alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}
