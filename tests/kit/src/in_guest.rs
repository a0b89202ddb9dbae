//! The in-guest tier (scripts/test-in-guest.sh): a Debian guest standing in
//! for a user's host — systemd-resolved running, device-mapper, nftables —
//! built once per set of inputs into `<target>/test-images/host-<key>`, and
//! one boot of it under banger's QEMU VMM that runs test binaries as root,
//! their output streamed back over the serial console.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use banger::host::disk::{cow, ext4};
use banger::host::image::{self, Manifest};

use crate::image::{GuestImage, Recorder, build_lock, images_dir, input_key, options};
use crate::shim::Shim;

/// Set in the guest's tests: they run on the tier's throwaway host.
pub const ENV: &str = "BANGER_IN_GUEST";

/// Whether this test runs in the tier's guest, where changing the host's
/// DNS or device-mapper state harms no one.
pub fn active() -> bool {
    std::env::var_os(ENV).is_some()
}

/// What a user's host has and the host tier uses, beyond every image's base.
pub const PACKAGES: &[&str] = &[
    "systemd-resolved",
    "dbus",
    "dmsetup",
    "nftables",
    "e2fsprogs",
    "util-linux",
    "procps",
    "dnsutils",
    "openssh-client",
];

/// The root filesystem's size: room for the tests' disks and VM state.
const ROOTFS_SIZE: u64 = 3 << 30;

/// The unit that runs the tier's script once the guest is up.
const UNIT_NAME: &str = "banger-in-guest.service";
const UNIT: &str = "\
[Unit]
Description=banger's in-guest test tier
After=multi-user.target systemd-resolved.service
RequiresMountsFor=/root

[Service]
Type=oneshot
ExecStart=/root/tier/run
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/ttyS0
";

/// The guest side of the tier.
const RUN_SCRIPT: &str = include_str!("../../../scripts/guest-tier/run");

/// How long the whole tier may take in the guest before it counts as hung.
const TIER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The tier's image, built once per set of inputs (`agent` is the static
/// `banger-agent` every banger image carries).
pub fn host_image(agent: &Path) -> GuestImage {
    let _lock = build_lock();
    let mut opts = options(agent);
    opts.packages = PACKAGES.iter().map(|p| (*p).to_owned()).collect();
    opts.size = Some(ROOTFS_SIZE);
    let base = images_dir();
    let dir = base.join(format!("host-{}", input_key(&opts)));
    let agent = agent.to_owned();
    if let Ok(manifest) = Manifest::read(&dir.join(image::MANIFEST)) {
        return GuestImage {
            dir,
            manifest,
            agent,
        };
    }
    let building = base.join(format!("building-host-{}", std::process::id()));
    let _ = fs::remove_dir_all(&building);
    let started = Instant::now();
    let manifest = image::build(&opts, &building, &Recorder::default())
        .unwrap_or_else(|e| panic!("the in-guest tier's image did not build: {e}"));
    eprintln!(
        "in-guest: image build took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fs::rename(&building, &dir).expect("move the built image into place");
    for entry in fs::read_dir(&base).into_iter().flatten().flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with("host-");
        if stale && entry.path() != dir {
            fs::remove_dir_all(entry.path()).expect("remove a stale tier image");
        }
    }
    GuestImage {
        dir,
        manifest,
        agent,
    }
}

/// One line of the guest's console, as the guest side of the tier marks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A test binary starts (its name without cargo's hash).
    Binary(String),
    /// A line of a test binary's output.
    Output(String),
    /// A test that skipped in the guest (a `BANGER_TEST_SKIPS` line).
    Skip(String),
    /// The tier's exit status.
    Exit(i32),
    /// Anything else: the kernel's and systemd's words.
    Console(String),
}

impl Line {
    pub fn parse(line: &str) -> Line {
        let line = line.trim_end_matches('\r');
        let marked = |tag: &str| line.strip_prefix(tag).map(str::to_owned);
        if let Some(name) = marked("#B ") {
            return Line::Binary(name);
        }
        if let Some(text) = marked("#T ").or_else(|| (line == "#T").then(String::new)) {
            return Line::Output(text);
        }
        if let Some(skip) = marked("#S ") {
            return Line::Skip(skip);
        }
        if let Some(code) = marked("#X ").and_then(|c| c.trim().parse().ok()) {
            return Line::Exit(code);
        }
        Line::Console(line.to_owned())
    }
}

/// What one area of the tier counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// The tests seen in the guest, by area: dm, resolved and the rest.
#[derive(Debug, Default)]
pub struct Tally {
    binary: String,
    /// `(binary::test, passed)` of every test that finished.
    finished: Vec<(String, bool)>,
    /// `<file>::<test>` of every test that skipped.
    skipped: Vec<String>,
}

/// The area a test counts in: `dm` or `resolved` when its binary or name
/// says so, else `other`.
fn area(test: &str) -> &'static str {
    if test.contains("dm") {
        "dm"
    } else if test.contains("resolved") {
        "resolved"
    } else {
        "other"
    }
}

impl Tally {
    /// Takes in one console line.
    pub fn see(&mut self, line: &Line) {
        match line {
            Line::Binary(name) => self.binary = name.clone(),
            Line::Output(text) => {
                let Some(rest) = text.strip_prefix("test ") else {
                    return;
                };
                let Some((name, outcome)) = rest.split_once(" ... ") else {
                    return;
                };
                let passed = match outcome.trim() {
                    "ok" => true,
                    "FAILED" => false,
                    _ => return,
                };
                self.finished
                    .push((format!("{}::{name}", self.binary), passed));
            }
            Line::Skip(skip) => {
                let test = skip.split(" — ").next().unwrap_or(skip);
                self.skipped.push(test.to_owned());
            }
            Line::Exit(_) | Line::Console(_) => {}
        }
    }

    /// Counts of one area (`dm`, `resolved`, `other`).
    pub fn counts(&self, of: &str) -> Counts {
        let mut counts = Counts::default();
        for (test, passed) in &self.finished {
            if area(test) != of {
                continue;
            }
            let (binary, name) = test.split_once("::").unwrap_or(("", test));
            let skip = self
                .skipped
                .iter()
                .any(|s| s.ends_with(&format!("/{binary}.rs::{name}")));
            match (skip, passed) {
                (true, _) => counts.skipped += 1,
                (false, true) => counts.passed += 1,
                (false, false) => counts.failed += 1,
            }
        }
        counts
    }

    /// One line for the suite's summary.
    pub fn summary(&self, took: Duration) -> String {
        let mut line = String::from("in-guest tier:");
        for of in ["dm", "resolved", "other"] {
            let c = self.counts(of);
            let _ = write!(
                line,
                " {of} {} passed, {} failed, {} skipped;",
                c.passed, c.failed, c.skipped
            );
        }
        let _ = write!(line, " {:.0} s", took.as_secs_f64());
        line
    }
}

/// Lines of the console that are not the tests': the tail printed on failure.
const CONSOLE_TAIL: usize = 60;

/// Boots the tier's guest from `image` with `files` (paths on the tier's
/// drive, mounted at `/root` in the guest, and the files to copy there),
/// runs `args` through the guest side of the tier, streams the tests' output
/// to stdout, and returns (exit status, tally). Skips seen in the guest are
/// added to this process's `BANGER_TEST_SKIPS`.
pub fn run(image: &GuestImage, files: &[(String, PathBuf)], args: &[String]) -> (i32, Tally) {
    let started = Instant::now();
    let shim = Shim::start();
    let drive = shim.dir.path().join("tier");
    for (at, from) in files {
        let to = drive.join(at);
        fs::create_dir_all(to.parent().expect("a parent")).expect("create a tier directory");
        fs::copy(from, &to)
            .unwrap_or_else(|e| panic!("copy {} to the tier's drive: {e}", from.display()));
    }
    let script = drive.join("tier/run");
    fs::create_dir_all(drive.join("tier")).expect("create tier/");
    fs::write(&script, RUN_SCRIPT).expect("write tier/run");
    set_mode(&script, 0o755);
    let arg_lines: String = args.iter().map(|a| format!("{a}\n")).collect();
    fs::write(drive.join("tier/args"), arg_lines).expect("write tier/args");
    let drive_image = shim.dir.path().join("tier.ext4");
    let size = tree_size(&drive) * 5 / 4 + (64 << 20);
    ext4::mkfs_from_dir(&drive, &drive_image, size, "tier").expect("make the tier's drive");
    fs::remove_dir_all(&drive).expect("remove the tier's tree");

    let rootfs = shim.dir.path().join("rootfs.ext4");
    cow::clone_file(&image.rootfs(), &rootfs, ROOTFS_SIZE).expect("copy the tier's rootfs");
    ext4::write_file(
        &rootfs,
        &format!("/etc/systemd/system/{UNIT_NAME}"),
        UNIT.as_bytes(),
        0o644,
    )
    .expect("install the tier's unit");
    eprintln!(
        "in-guest: booting the guest ({:.1} s to set up)",
        started.elapsed().as_secs_f64()
    );

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    shim.put_ok(
        "/machine-config",
        &format!(r#"{{"vcpu_count":{cpus},"mem_size_mib":1536}}"#),
    );
    let boot_args = format!(
        "console=ttyS0 reboot=k panic=1 quiet systemd.show_status=false \
         systemd.wants={UNIT_NAME} systemd.mask=serial-getty@ttyS0.service"
    );
    shim.put_ok(
        "/boot-source",
        &serde_json::json!({
            "kernel_image_path": image.vmlinux(),
            "initrd_path": image.initrd(),
            "boot_args": boot_args,
        })
        .to_string(),
    );
    for (id, path, root) in [("rootfs", &rootfs, true), ("tier", &drive_image, false)] {
        shim.put_ok(
            &format!("/drives/{id}"),
            &serde_json::json!({
                "drive_id": id,
                "path_on_host": path,
                "is_root_device": root,
                "is_read_only": false,
            })
            .to_string(),
        );
    }
    shim.instance_start();
    follow(shim, started)
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The bytes of every file under `dir`.
fn tree_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// Reads the console as it grows until the guest reports its exit status
/// (or the VM ends without one, or the tier times out).
fn follow(mut shim: Shim, started: Instant) -> (i32, Tally) {
    let mut console = fs::File::open(&shim.console).expect("open the console log");
    let mut tally = Tally::default();
    let mut tail: Vec<String> = Vec::new();
    let mut skips = Vec::new();
    let mut pending = Vec::new();
    let mut status = None;
    let mut out = std::io::stdout().lock();
    let mut guest_up = None;
    while status.is_none() {
        let mut chunk = Vec::new();
        console
            .read_to_end(&mut chunk)
            .expect("read the console log");
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = pending.drain(..=end).collect();
            let line = Line::parse(String::from_utf8_lossy(&raw[..end]).as_ref());
            tally.see(&line);
            match &line {
                Line::Binary(name) => {
                    guest_up.get_or_insert_with(|| {
                        eprintln!(
                            "in-guest: tests start ({:.1} s after boot)",
                            started.elapsed().as_secs_f64()
                        );
                    });
                    let _ = writeln!(out, "\n     In guest: {name}");
                }
                Line::Output(text) => {
                    let _ = writeln!(out, "{text}");
                }
                Line::Skip(skip) => skips.push(skip.clone()),
                Line::Exit(code) => status = Some(*code),
                Line::Console(text) => {
                    tail.push(text.clone());
                    if tail.len() > CONSOLE_TAIL {
                        tail.remove(0);
                    }
                }
            }
        }
        if status.is_some() {
            break;
        }
        if let Some(exit) = shim.child.try_wait().expect("wait for the VMM") {
            console
                .read_to_end(&mut pending)
                .expect("read the console log");
            tail.push(String::from_utf8_lossy(&pending).into_owned());
            eprintln!(
                "in-guest: the guest ended ({exit}) before the tests reported; VMM stderr:\n{}",
                shim.stderr_text()
            );
            status = Some(1);
        } else if started.elapsed() > TIER_TIMEOUT {
            eprintln!("in-guest: no result within {TIER_TIMEOUT:?}");
            status = Some(1);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let status = status.unwrap_or(1);
    let _ = shim.wait_exit(Duration::from_secs(30));
    if status != 0 {
        eprintln!("\nin-guest: the guest's console, last {CONSOLE_TAIL} lines:");
        for line in &tail {
            eprintln!("  | {line}");
        }
    }
    record_skips(&skips);
    (status, tally)
}

/// Adds the guest's skips to this process's `BANGER_TEST_SKIPS`, their
/// reason marked as the guest's.
fn record_skips(skips: &[String]) {
    let Some(path) = std::env::var_os("BANGER_TEST_SKIPS") else {
        return;
    };
    let lines: String = skips
        .iter()
        .map(|skip| match skip.split_once(" — ") {
            Some((test, reason)) => format!("{test} — in-guest {reason}\n"),
            None => format!("{skip}\n"),
        })
        .collect();
    let written = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()));
    if let Err(e) = written {
        eprintln!("in-guest: cannot record the guest's skips: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_are_told_apart_by_their_marks() {
        assert_eq!(
            Line::parse("#B host_disk"),
            Line::Binary("host_disk".into())
        );
        assert_eq!(
            Line::parse("#T test a ... ok\r"),
            Line::Output("test a ... ok".into())
        );
        assert_eq!(Line::parse("#T"), Line::Output(String::new()));
        assert_eq!(Line::parse("#X 101"), Line::Exit(101));
        assert_eq!(
            Line::parse("[    1.0] EXT4-fs (vda): mounted"),
            Line::Console("[    1.0] EXT4-fs (vda): mounted".into())
        );
    }

    #[test]
    fn tests_are_counted_by_area_and_skips_apart() {
        let mut tally = Tally::default();
        for line in [
            "#B host_disk",
            "#T test dm_snapshot_pads_and_keeps_base_untouched ... ok",
            "#T test clone_file_on_xfs_is_a_reflink ... ok",
            "#T test loop_attach_find_and_detach ... FAILED",
            "#B host_dns",
            "#T test resolved_routes_vm_names ... ok",
            "#T test result: ok. 1 passed; 0 failed",
            "#S tests/host_disk.rs::clone_file_on_xfs_is_a_reflink — xfs — mkfs.xfs is not on PATH",
        ] {
            tally.see(&Line::parse(line));
        }
        let c = |passed, failed, skipped| Counts {
            passed,
            failed,
            skipped,
        };
        assert_eq!(tally.counts("dm"), c(1, 0, 0));
        assert_eq!(tally.counts("resolved"), c(1, 0, 0));
        assert_eq!(tally.counts("other"), c(0, 1, 1));
        assert_eq!(
            tally.summary(Duration::from_secs(90)),
            "in-guest tier: dm 1 passed, 0 failed, 0 skipped; resolved 1 passed, 0 failed, 0 skipped; other 0 passed, 1 failed, 1 skipped; 90 s"
        );
    }
}
