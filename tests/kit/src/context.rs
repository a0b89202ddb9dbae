//! The CLI test context: every path in a temp dir, every command in a private
//! network namespace, and a cleanup that kills what the test started and
//! detaches its loop devices even when the test fails.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::netns::NamedNetns;
use crate::procs::{self, eventually};
use crate::{Need, require};

/// A command line for banger, built up flag by flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Args(pub Vec<String>);

impl Args {
    pub fn new(args: &[&str]) -> Self {
        Self(args.iter().map(|a| (*a).to_owned()).collect())
    }

    /// These arguments followed by `more`.
    pub fn with(mut self, more: &[&str]) -> Self {
        self.0.extend(more.iter().map(|a| (*a).to_owned()));
        self
    }
}

impl<'a> IntoIterator for &'a Args {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The flags that keep a test VM small and quick: one vCPU, the least
/// memory, a 64 MiB work disk.
pub const SMALL: &[&str] = &["--vcpus", "1", "--memory", "128", "--work-size", "64M"];

/// `vm create NAME` with [`SMALL`]'s flags.
pub fn create_small(name: &str) -> Args {
    Args::new(&["vm", "create", name]).with(SMALL)
}

/// Points `cmd` at the state under `home`, `run_dir` and `config`, with no stdin.
fn state_env(cmd: &mut Command, home: &Path, run_dir: &Path, config: &Path) {
    cmd.env("BANGER_HOME", home)
        .env("BANGER_RUN_DIR", run_dir)
        .env("BANGER_CONFIG", config)
        .stdin(Stdio::null());
}

/// banger state in a temp dir and nothing else: for commands that touch no
/// host resource (parsing, listing, completion, builds), so no root needed.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub run_dir: PathBuf,
    pub config: PathBuf,
}

impl Default for Sandbox {
    /// A sandbox with an empty config file.
    fn default() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgs")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").expect("config");
        Self {
            home: dir.path().join("home"),
            run_dir: dir.path().join("run"),
            config,
            dir,
        }
    }
}

impl Sandbox {
    /// `banger ARGS` with this sandbox's state.
    pub fn cmd<A>(&self, args: A) -> Command
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        let mut cmd = Command::new(crate::banger_bin());
        cmd.args(os_args(args));
        state_env(&mut cmd, &self.home, &self.run_dir, &self.config);
        cmd
    }

    pub fn run<A>(&self, args: A) -> Output
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        self.cmd(args).output().expect("run banger")
    }
}

fn os_args<A>(args: A) -> Vec<OsString>
where
    A: IntoIterator,
    A::Item: AsRef<OsStr>,
{
    args.into_iter().map(|a| a.as_ref().to_owned()).collect()
}

/// Fresh banger state for one test, run in its own network namespace. Fields
/// drop in order: the namespace goes before the temp dir, as the processes
/// in it (killed by `drop`) may have held files there.
pub struct TestContext {
    pub netns: NamedNetns,
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub run_dir: PathBuf,
    pub config: PathBuf,
    pub vmm: PathBuf,
    pub extra_env: Vec<(String, String)>,
}

/// A context on the real Firecracker with a small image `base` imported, or
/// `None` (after saying why) when this host cannot run Firecracker.
#[track_caller]
pub fn firecracker_context() -> Option<TestContext> {
    with_image(on_firecracker(true)?)
}

/// Like [`firecracker_context`], without an image.
#[track_caller]
pub fn bare_firecracker_context() -> Option<TestContext> {
    on_firecracker(true)
}

/// Like [`firecracker_context`], for commands that start no VM and so need
/// no `/dev/kvm`.
#[track_caller]
pub fn context_without_kvm() -> Option<TestContext> {
    with_image(on_firecracker(false)?)
}

#[track_caller]
fn on_firecracker(kvm: bool) -> Option<TestContext> {
    let (firecracker, vmlinux) = (crate::firecracker(), crate::vmlinux());
    let mut needs = vec![Need::Root, Need::File(&firecracker), Need::File(&vmlinux)];
    if kvm {
        needs.insert(1, Need::Kvm);
    }
    if require("firecracker", &needs).is_some() {
        return None;
    }
    let mut ctx = TestContext::new(&firecracker);
    ctx.set_vmm("firecracker");
    Some(ctx)
}

/// A context on the test VMM with the guest test image imported as `base`
/// (the default image), or `None` (after saying why) when this host cannot
/// run guests; `more` names what the caller needs besides.
#[track_caller]
pub fn guest_context(more: &[Need<'_>]) -> Option<TestContext> {
    let (kernel, vmm) = (crate::vmlinux(), crate::vmm_qemu());
    let mut needs = vec![
        Need::Root,
        Need::File(&kernel),
        Need::File(&vmm),
        Need::Program("qemu-system-x86_64"),
        Need::Env("BANGER_AGENT"),
        Need::Program("vhost-device-vsock"),
    ];
    needs.extend(more.iter().cloned());
    if require("guest", &needs).is_some() {
        return None;
    }
    let image = crate::image::guest_image("guest")?;
    let ctx = TestContext::on_qemu();
    ctx.ok([
        OsStr::new("image"),
        OsStr::new("import"),
        OsStr::new("base"),
        OsStr::new("--kernel"),
        image.vmlinux().as_os_str(),
        OsStr::new("--rootfs"),
        image.rootfs().as_os_str(),
        OsStr::new("--initrd"),
        image.initrd().as_os_str(),
        OsStr::new("--work-seed"),
        image.work_seed().as_os_str(),
    ]);
    Some(ctx)
}

/// A context on the fake VMM (`tests/vmm-fake`, which poses as Firecracker)
/// set to behave as `fault` (`VMM_FAKE_FAULT`: no QEMU, no KVM needed),
/// with a small image `base` as the default.
#[track_caller]
pub fn faulty_vmm_context(fault: &str) -> Option<TestContext> {
    let (kernel, shim) = (crate::vmlinux(), crate::vmm_fake());
    if require(
        "host",
        &[Need::Root, Need::File(&kernel), Need::File(&shim)],
    )
    .is_some()
    {
        return None;
    }
    let mut ctx = TestContext::new(&shim);
    ctx.set_vmm("firecracker");
    ctx.extra_env
        .push(("VMM_FAKE_FAULT".to_owned(), fault.to_owned()));
    ctx.import_image("base");
    Some(ctx)
}

fn with_image(ctx: TestContext) -> Option<TestContext> {
    ctx.import_image("base");
    Some(ctx)
}

impl TestContext {
    /// A fresh banger state in a temp dir, its own network namespace, and
    /// the given VMM binary (real Firecracker or the test shim). Needs root.
    pub fn new(vmm: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bgt")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let home = dir.path().join("home");
        let run_dir = dir.path().join("run");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "tap_pool_size = 0\n").expect("config");
        let suffix = dir.path().to_string_lossy()[8..].to_owned();
        let netns = NamedNetns::named(format!("bgt-{suffix}"));
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

    /// A context whose VMs run under banger's QEMU VMM (`BANGER_VMM=qemu`),
    /// with the real Firecracker fixture still configured (for `doctor`).
    pub fn on_qemu() -> Self {
        let mut ctx = Self::new(&crate::firecracker());
        ctx.set_vmm("qemu");
        ctx.extra_env.push((
            "BANGER_VMM_QEMU".to_owned(),
            crate::vmm_qemu().display().to_string(),
        ));
        ctx
    }

    /// Sets `BANGER_VMM` (`auto`, `firecracker` or `qemu`) for every command.
    pub fn set_vmm(&mut self, vmm: &str) {
        self.extra_env.retain(|(k, _)| k != "BANGER_VMM");
        self.extra_env
            .push(("BANGER_VMM".to_owned(), vmm.to_owned()));
    }

    pub fn set_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("config");
    }

    /// `banger ARGS` inside the namespace, with this context's state.
    pub fn cmd<A>(&self, args: A) -> Command
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        let mut cmd = self.netns.command(crate::banger_bin());
        cmd.args(os_args(args));
        state_env(&mut cmd, &self.home, &self.run_dir, &self.config);
        cmd.env("BANGER_FIRECRACKER", &self.vmm)
            .env("BANGER_SIDECAR_GRACE", "3s");
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn run<A>(&self, args: A) -> Output
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        self.cmd(args).output().expect("run banger")
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok<A>(&self, args: A) -> String
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        let args = os_args(args);
        let out = self.run(&args);
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
    pub fn fails<A>(&self, code: i32, args: A) -> String
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        let args = os_args(args);
        let out = self.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "banger {args:?}: stderr:\n{stderr}"
        );
        stderr
    }

    /// Runs, asserts success, and parses stdout as JSON.
    pub fn json<A>(&self, args: A) -> serde_json::Value
    where
        A: IntoIterator,
        A::Item: AsRef<OsStr>,
    {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    /// `vm show NAME --json`.
    pub fn show(&self, name: &str) -> serde_json::Value {
        self.json(["vm", "show", name, "--json"])
    }

    /// The VM named `name` in `vm ls --json`, if listed.
    pub fn listed(&self, name: &str) -> Option<serde_json::Value> {
        let all = self.json(["vm", "ls", "--json"]);
        all.as_array()
            .expect("a JSON array")
            .iter()
            .find(|vm| vm["name"] == name)
            .cloned()
    }

    /// Starts every command at once and waits for them all; outputs in order.
    pub fn concurrently(&self, commands: &[Args]) -> Vec<Output> {
        let children: Vec<_> = commands
            .iter()
            .map(|args| {
                self.cmd(args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("spawn banger")
            })
            .collect();
        children
            .into_iter()
            .map(|child| child.wait_with_output().expect("wait for banger"))
            .collect()
    }

    /// Runs every command at once, asserts each succeeded; stdouts in order.
    pub fn all_ok(&self, commands: &[Args]) -> Vec<String> {
        commands
            .iter()
            .zip(self.concurrently(commands))
            .map(|(args, out)| {
                assert!(
                    out.status.success(),
                    "banger {:?} failed: {}",
                    args.0,
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect()
    }

    /// Runs a command (not banger) inside the namespace; returns stdout.
    pub fn sh(&self, argv: &[&str]) -> String {
        self.netns.exec(argv)
    }

    /// A small ext4 rootfs and the test kernel, imported as `name`.
    pub fn import_image(&self, name: &str) {
        let rootfs = self.dir.path().join(format!("{name}-rootfs.ext4"));
        crate::make_ext4(&rootfs, 64);
        self.ok([
            OsStr::new("image"),
            OsStr::new("import"),
            OsStr::new(name),
            OsStr::new("--kernel"),
            crate::vmlinux().as_os_str(),
            OsStr::new("--rootfs"),
            rootfs.as_os_str(),
        ]);
    }

    /// Loop devices whose backing file lies under this context's dir.
    pub fn loops(&self) -> Vec<String> {
        crate::loops_under(self.dir.path())
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
        procs::processes_with_env(&format!("BANGER_RUN_DIR={}", self.run_dir.display()))
    }

    /// Live VMM processes of this context: (pid, API socket path).
    pub fn vmms(&self) -> Vec<(i32, PathBuf)> {
        self.processes()
            .into_iter()
            .filter_map(|pid| {
                let args = procs::cmdline(pid);
                let at = args.iter().position(|a| a == "--api-sock")?;
                Some((pid, PathBuf::from(args.get(at + 1)?)))
            })
            .collect()
    }

    /// The API socket of VM `id`.
    pub fn api_sock(&self, id: &str) -> PathBuf {
        self.run_dir.join("vms").join(id).join("api.sock")
    }

    /// Live VMM processes serving the API socket of VM `id`.
    pub fn vmms_of(&self, id: &str) -> Vec<i32> {
        let sock = self.api_sock(id);
        self.vmms()
            .into_iter()
            .filter(|(_, s)| *s == sock)
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Whether no VMM of this context is left, within 5 s.
    pub fn vmms_gone(&self) -> bool {
        eventually(Duration::from_secs(5), || self.vmms().is_empty())
    }

    /// Asserts that no VM of this context holds anything on the host: no VM
    /// TAP, no loop device over its files, no NAT rule, no socket directory,
    /// no VMM process. `when` says which step of the test is checked.
    pub fn assert_nothing_left(&self, when: &str) {
        assert!(
            self.vmms_gone(),
            "{when}: VMM processes left: {:?}",
            self.vmms()
        );
        assert_eq!(self.links("bg-"), Vec::<String>::new(), "{when}: TAPs left");
        assert_eq!(
            self.loops(),
            Vec::<String>::new(),
            "{when}: loop devices left"
        );
        let ruleset = self.sh(&["nft", "list", "ruleset"]);
        assert!(
            !ruleset.contains("\"banger:"),
            "{when}: NAT rules left:\n{ruleset}"
        );
        let sockets = entries(&self.run_dir.join("vms"));
        assert!(
            sockets.is_empty(),
            "{when}: socket directories left: {sockets:?}"
        );
    }
}

/// The names in `dir`, sorted; none when it does not exist.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
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
    }
}
