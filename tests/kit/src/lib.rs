//! banger's test kit: what the integration tests of banger and of banger-vmm-qemu
//! share — where the fixtures and binaries are, one way to skip, the CLI test
//! context, the guest image, the shim, `/proc` and namespace helpers, snapshots.
//!
//! Nothing here names an absolute path: everything is found from this crate's
//! `CARGO_MANIFEST_DIR`, `CARGO_TARGET_DIR`, `BANGER_TEST_DEPS`, `BANGER_AGENT`
//! or the running test binary.

pub mod api;
pub mod context;
pub mod image;
pub mod in_guest;
pub mod netns;
pub mod procs;
pub mod require;
pub mod rng;
pub mod shim;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub use context::{Args, TestContext, create_small};
#[doc(hidden)]
pub use insta;
pub use procs::{eventually, pid_alive};
pub use require::{Need, Skip, require};

/// The workspace root: the directory holding banger's `Cargo.toml`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where scripts/test-deps.sh put the real parts: `BANGER_TEST_DEPS`, else
/// `target/test-deps`.
pub fn deps() -> PathBuf {
    std::env::var_os("BANGER_TEST_DEPS")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("test-deps"))
}

/// The Firecracker fixture.
pub fn firecracker() -> PathBuf {
    deps().join("bin/firecracker")
}

/// The guest kernel fixture (a Debian cloud kernel, unpacked to ELF).
pub fn vmlinux() -> PathBuf {
    deps().join("vmlinux")
}

/// The vsock backend the shim runs beside QEMU.
pub fn vhost_device_vsock() -> PathBuf {
    deps().join("bin/vhost-device-vsock")
}

/// The statically linked agent scripts/test.sh builds (`BANGER_AGENT`).
pub fn agent() -> Option<PathBuf> {
    std::env::var_os("BANGER_AGENT").map(PathBuf::from)
}

/// The directory of the workspace's binaries for the running test: the test
/// binary lives in `<profile>/deps/`, the binaries in `<profile>/`.
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("the test binary's directory");
    deps.parent().unwrap_or(deps).to_owned()
}

/// The `banger` binary built for this test run.
pub fn banger_bin() -> PathBuf {
    bin_dir().join("banger")
}

/// banger's QEMU-backed VMM (`src/vmm-qemu`) built for this test run.
pub fn vmm_qemu() -> PathBuf {
    bin_dir().join("banger-vmm-qemu")
}

/// The fake VMM (`tests/vmm-fake`) built for this test run.
pub fn vmm_fake() -> PathBuf {
    bin_dir().join("vmm-fake")
}

/// The guest agent built beside banger (`cargo build --workspace`).
pub fn banger_agent_bin() -> PathBuf {
    bin_dir().join("banger-agent")
}

/// Whether `program` is found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(program)).is_ok_and(|m| m.is_file()))
    })
}

/// Runs a command to completion with no stdin, panicking with its stderr on
/// failure; returns stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    checked(program, args, output)
}

/// Runs `program` with `stdin` fed to it, panicking on failure; returns stdout.
pub fn run_with_stdin(program: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("wait");
    checked(program, args, output)
}

fn checked(program: &str, args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A sparse file of `mib` MiB formatted as ext4 (label `test-root`).
pub fn make_ext4(path: &Path, mib: u64) {
    let file = std::fs::File::create(path).expect("create");
    file.set_len(mib << 20).expect("size");
    let path = path.to_str().expect("a UTF-8 path");
    run("mkfs.ext4", &["-q", "-F", "-L", "test-root", path]);
}

/// Loop devices whose backing file lies under `dir`.
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

/// Makes an ed25519 key pair at `path` (and `path.pub`); returns the public key.
pub fn ssh_keygen(path: &Path) -> String {
    let path_text = path.to_str().expect("a UTF-8 path");
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-f", path_text],
    );
    std::fs::read_to_string(path.with_extension("pub")).expect("the public key")
}
