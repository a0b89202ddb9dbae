//! `banger doctor`: one line per prerequisite with pass / warn / fail and a
//! hint saying how to fix it (only where something is to be done, said
//! once); `--boot` also boots the default image in a throwaway VM. Exits 1
//! when any check fails.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde::Serialize;

use super::print_json;
use crate::cli::DoctorArgs;
use crate::host::disk::{cow, dm};
use crate::host::firecracker::process;
use crate::host::image::{Manifest, ManifestFile};
use crate::host::run::{self as host_run, RunError};
use crate::host::{dns, net};
use crate::ops;
use crate::ops::diagnose::{Evidence, LogMark};
use crate::state::config::Config;
use crate::state::model::{VmmChoice, VmmKind};
use crate::state::parse::{MIN_WORK_SIZE, format_duration};
use crate::state::paths::Paths;
use crate::vm::{Ctx, LockedVm, VmRead};

/// The hint of a check that failed only because banger is not root: the
/// `root` check says what to do.
const NEEDS_ROOT: &str = "needs root (see `root` above)";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn pass(check: &'static str, detail: impl Into<String>) -> Check {
    Check {
        check,
        status: Status::Pass,
        detail: detail.into(),
        hint: None,
    }
}
fn warn(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        check,
        status: Status::Warn,
        detail: detail.into(),
        hint: Some(hint.into()),
    }
}
fn fail(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        check,
        status: Status::Fail,
        detail: detail.into(),
        hint: Some(hint.into()),
    }
}

pub fn run(args: DoctorArgs, global: &super::Global) -> Result<i32> {
    let paths = Paths::from_env();
    let config = Config::load()?;
    // With QEMU usable, a missing KVM or Firecracker only slows VMs down.
    let qemu_check = qemu(&config);
    let fallback = qemu_check.status == Status::Pass;
    let mut checks = vec![
        root(),
        softened(kvm(), fallback),
        softened(firecracker(&config), fallback),
        qemu_check,
        device_mapper(),
        reflink(&paths),
        device(
            "loop control",
            "/dev/loop-control",
            "load the loop module: modprobe loop",
        ),
        device("tun", "/dev/net/tun", "load the tun module: modprobe tun"),
        tool(
            "nftables",
            "nft",
            &["--version"],
            "install nftables (apt install nftables)",
        ),
        e2fsprogs(),
        tool(
            "ssh client",
            "ssh",
            &["-V"],
            "install OpenSSH's client (apt install openssh-client)",
        ),
        ip_forward(),
        bridge(&config),
        resolved(&config),
        free_space(&paths),
    ];
    // Checks that need banger's state (skipped when it cannot be opened).
    match global.ctx() {
        Ok(ctx) => {
            checks.push(vmm(&ctx));
            checks.push(default_image(&ctx));
            checks.push(sidecar(&ctx));
            checks.push(pools(&ctx));
            checks.push(vm_taps(&ctx));
            checks.push(leftovers(&ctx));
        }
        Err(e) => {
            let hint = if is_root() {
                "check BANGER_HOME and BANGER_RUN_DIR (see the error)"
            } else {
                NEEDS_ROOT
            };
            checks.push(fail("state", format!("{e:#}"), hint));
        }
    }
    if args.boot {
        checks.push(match global.ctx() {
            Ok(ctx) => boot(&ctx, args.timeout),
            Err(e) => fail("boot", format!("cannot boot: {e:#}"), "fix `state` first"),
        });
    }
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        print_json(&checks)?;
    } else {
        for c in &checks {
            let tag = match c.status {
                Status::Pass => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            outln!("{tag}  {:<14} {}", c.check, c.detail)?;
            if let Some(hint) = &c.hint {
                outln!("      {:<14} → {hint}", "")?;
            }
        }
    }
    Ok(i32::from(failed))
}

fn root() -> Check {
    if nix::unistd::geteuid().is_root() {
        pass("root", "running as root")
    } else {
        fail(
            "root",
            "not running as root",
            "banger manages bridges, TAPs and loop devices: run it with sudo",
        )
    }
}

nix::ioctl_none!(kvm_get_api_version, 0xAE, 0x00);

fn kvm() -> Check {
    let file = match std::fs::File::open("/dev/kvm") {
        Ok(f) => f,
        Err(e) => {
            return fail(
                "kvm",
                format!("/dev/kvm: {e}"),
                kvm_hint(e.kind(), is_root()),
            );
        }
    };
    use std::os::fd::AsRawFd;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only reads the fd.
    match unsafe { kvm_get_api_version(file.as_raw_fd()) } {
        Ok(12) => pass("kvm", "/dev/kvm opens, KVM API version 12"),
        Ok(v) => warn(
            "kvm",
            format!("KVM API version {v}"),
            "Firecracker expects API version 12",
        ),
        Err(e) => fail(
            "kvm",
            format!("KVM_GET_API_VERSION failed: {e}"),
            "check that /dev/kvm is a KVM device",
        ),
    }
}

/// What to do about `/dev/kvm` failing to open with `kind`.
fn kvm_hint(kind: std::io::ErrorKind, root: bool) -> &'static str {
    match kind {
        std::io::ErrorKind::PermissionDenied if !root => NEEDS_ROOT,
        std::io::ErrorKind::PermissionDenied => {
            "check /dev/kvm's permissions (a security module may deny it)"
        }
        std::io::ErrorKind::NotFound => {
            "enable virtualisation (VT-x/AMD-V) in the firmware and load kvm_intel or kvm_amd"
        }
        _ => "check that /dev/kvm is a KVM device",
    }
}

fn firecracker(config: &Config) -> Check {
    let hint = format!(
        "download it from Firecracker's releases page ({}) and put `firecracker` on PATH, \
         or set BANGER_FIRECRACKER or `firecracker` in the config file",
        process::RELEASES_URL
    );
    let bin = match process::find_binary(config.firecracker.as_deref()) {
        Ok(bin) => bin,
        Err(process::FcError::NotFound { looked }) => {
            // Where it looked, without the advice (the hint says it) or PATH.
            let looked = looked.split(" (").next().unwrap_or(&looked).to_owned();
            return fail("firecracker", format!("not found: {looked}"), hint);
        }
        Err(e) => return fail("firecracker", e.to_string(), hint),
    };
    match process::version(&bin) {
        Ok((1, minor, patch)) if (10..=12).contains(&minor) => pass(
            "firecracker",
            format!("{} v1.{minor}.{patch}", bin.display()),
        ),
        Ok((major, minor, patch)) if (major, minor) >= (1, 10) => warn(
            "firecracker",
            format!("{} v{major}.{minor}.{patch}", bin.display()),
            "banger is tested with v1.10 to v1.12",
        ),
        Ok((major, minor, patch)) => fail(
            "firecracker",
            format!("{} v{major}.{minor}.{patch} is too old", bin.display()),
            hint,
        ),
        Err(e) => fail(
            "firecracker",
            format!("{}: {e}", bin.display()),
            "check that it is Firecracker and runs on this host",
        ),
    }
}

/// A failed check as a warning when `fallback` (QEMU) can run VMs anyway.
fn softened(mut check: Check, fallback: bool) -> Check {
    if fallback && check.status == Status::Fail {
        check.status = Status::Warn;
        check.hint = Some(format!(
            "{}; until then VMs run under QEMU's software CPU",
            check.hint.unwrap_or_default()
        ));
    }
    check
}

/// banger-vmm-qemu and the programs it runs.
fn qemu(config: &Config) -> Check {
    match crate::host::qemu::find_binary(config.qemu_vmm.as_deref()) {
        Ok(bin) => pass(
            "qemu",
            format!(
                "{} with {} and {} on PATH",
                bin.display(),
                crate::host::qemu::QEMU.0,
                crate::host::qemu::VSOCK_BACKEND.0
            ),
        ),
        Err(e) => warn(
            "qemu",
            e.to_string(),
            "needed where Firecracker cannot run guests; scripts/install.sh installs it",
        ),
    }
}

/// Which VMM `auto` (or the configured one) starts VMs with, and why.
fn vmm(ctx: &Ctx) -> Check {
    let choice = ctx.config.vmm;
    let pick = match crate::vm::vmm_choice::pick(ctx, None) {
        Ok(pick) => pick,
        Err(e) => {
            return fail(
                "vmm",
                format!("vmm = {choice}: {e:#}"),
                "install Firecracker or QEMU (scripts/install.sh)",
            );
        }
    };
    let kind = pick.kind;
    match (choice, pick.fallback) {
        (VmmChoice::Auto, Some(why)) => warn(
            "vmm",
            format!("auto picks qemu: {why}"),
            "VMs boot in tens of seconds under QEMU's software CPU; where KVM runs guests, \
             Firecracker boots them in about a second",
        ),
        (VmmChoice::Auto, None) if pick.probe => pass(
            "vmm",
            "auto picks firecracker (the first boot checks that it runs guests on this kernel)",
        ),
        (VmmChoice::Auto, None) => pass(
            "vmm",
            "auto picks firecracker: it has run guests on this kernel",
        ),
        (_, _) => pass("vmm", format!("{kind}, as configured (vmm = {choice})")),
    }
}

fn device_mapper() -> Check {
    if dm::available() {
        pass("device-mapper", "available: root disks are dm-snapshots")
    } else {
        warn(
            "device-mapper",
            "not available: root disks are reflink clones, overlays (images built by banger) or sparse copies",
            "for instant copy-on-write root disks, load dm_snapshot (modprobe dm_snapshot) and install dmsetup",
        )
    }
}

fn reflink(paths: &Paths) -> Check {
    let base = existing_ancestor(&paths.home).to_owned();
    let src = base.join(".doctor-reflink-src");
    let dst = base.join(".doctor-reflink-dst");
    let result = std::fs::write(&src, b"banger")
        .map_err(anyhow::Error::from)
        .and_then(|()| Ok(cow::clone_file(&src, &dst, 6)?));
    std::fs::remove_file(&src).ok();
    std::fs::remove_file(&dst).ok();
    match result {
        Ok(cow::CowStrategy::Reflink) => {
            pass("reflink", format!("{} supports reflinks", base.display()))
        }
        Ok(_) => warn(
            "reflink",
            format!(
                "{} has no reflinks: root disks are overlays (images built by banger) or sparse copies",
                base.display()
            ),
            "put BANGER_HOME on XFS or btrfs for instant clones",
        ),
        Err(e) => fail(
            "reflink",
            format!("cannot write in {}: {e:#}", base.display()),
            if is_root() {
                "check BANGER_HOME's permissions"
            } else {
                NEEDS_ROOT
            },
        ),
    }
}

fn device(check: &'static str, path: &str, hint: &str) -> Check {
    if Path::new(path).exists() {
        pass(check, format!("{path} present"))
    } else {
        fail(check, format!("{path} missing"), hint)
    }
}

fn tool(check: &'static str, program: &str, args: &[&str], hint: &str) -> Check {
    match host_run::output(Command::new(program).args(args), None) {
        Ok(out) if out.status.success() => {
            let text = if out.stdout.is_empty() {
                out.stderr
            } else {
                out.stdout
            };
            pass(
                check,
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or(program)
                    .trim()
                    .to_owned(),
            )
        }
        Ok(out) => fail(
            check,
            format!("`{program}` exited with {}", out.status),
            hint,
        ),
        Err(e) => fail(check, format!("`{program}`: {}", not_started(&e)), hint),
    }
}

/// Why a program did not start, as the system puts it.
fn not_started(e: &RunError) -> String {
    match e {
        RunError::Spawn { source, .. } => source.to_string(),
        RunError::Failed { .. } => e.to_string(),
    }
}

fn e2fsprogs() -> Check {
    let hint = "install e2fsprogs 1.43 or newer (apt install e2fsprogs)";
    let out = match host_run::output(Command::new("mke2fs").arg("-V"), None) {
        Ok(out) => out,
        Err(e) => return fail("e2fsprogs", format!("mke2fs: {}", not_started(&e)), hint),
    };
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let version = text.split_whitespace().nth(1).unwrap_or("");
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) >= (1, 43) {
        pass(
            "e2fsprogs",
            format!("mke2fs {version} (supports mkfs.ext4 -d)"),
        )
    } else {
        fail(
            "e2fsprogs",
            format!("mke2fs {version:?} is too old for mkfs.ext4 -d"),
            hint,
        )
    }
}

fn ip_forward() -> Check {
    match std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward") {
        Ok(v) if v.trim() == "1" => pass("ip forwarding", "enabled"),
        // Nothing to do: say so without a warning.
        _ => pass(
            "ip forwarding",
            "off for now (banger enables it when it sets up the bridge)",
        ),
    }
}

fn bridge(config: &Config) -> Check {
    match net::bridge::link_exists(&config.bridge) {
        Ok(true) => pass(
            "bridge",
            format!("{} exists ({})", config.bridge, config.subnet),
        ),
        Ok(false) => pass(
            "bridge",
            format!(
                "{} not created yet (made when the first VM starts)",
                config.bridge
            ),
        ),
        Err(e) => fail(
            "bridge",
            e.to_string(),
            if is_root() {
                "check netlink access"
            } else {
                NEEDS_ROOT
            },
        ),
    }
}

fn resolved(config: &Config) -> Check {
    let active = dns::resolved_active();
    let gateway = config.subnet.gateway();
    if !active {
        return warn(
            "vm names",
            format!(
                "systemd-resolved is not running: the host does not resolve *.{}",
                config.domain
            ),
            format!(
                "use IPs from `banger vm ls`, or point a resolver for {} at {gateway}",
                config.domain
            ),
        );
    }
    let routed = host_run::output(
        Command::new("resolvectl").args(["domain", &config.bridge]),
        None,
    )
    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("~{}", config.domain)));
    if routed {
        pass(
            "vm names",
            format!("systemd-resolved routes ~{} to {gateway}", config.domain),
        )
    } else {
        pass(
            "vm names",
            format!(
                "~{} not routed yet (banger routes it when it sets up the bridge)",
                config.domain
            ),
        )
    }
}

/// `path`, or its nearest ancestor that exists (BANGER_HOME before first use).
fn existing_ancestor(path: &Path) -> &Path {
    let mut dir = path;
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    dir
}

fn free_space(paths: &Paths) -> Check {
    let dir = existing_ancestor(&paths.home);
    match nix::sys::statvfs::statvfs(dir) {
        Ok(s) => {
            let free = s.blocks_available() * s.fragment_size();
            let shown = crate::state::parse::format_size(free);
            if free >= 10 << 30 {
                pass("free space", format!("{shown} free at {}", dir.display()))
            } else if free >= 2 << 30 {
                warn(
                    "free space",
                    format!("{shown} free at {}", dir.display()),
                    "images take ~1-2G and each VM's disks grow with use",
                )
            } else {
                fail(
                    "free space",
                    format!("only {shown} free at {}", dir.display()),
                    "free space or move BANGER_HOME",
                )
            }
        }
        Err(e) => fail(
            "free space",
            format!("{}: {e}", dir.display()),
            "check BANGER_HOME",
        ),
    }
}

fn default_image(ctx: &Ctx) -> Check {
    let image = match ctx.store.default_image() {
        Ok(Some(image)) => image,
        Ok(None) => {
            return warn(
                "image",
                "no image yet",
                "`banger image build default` (or `banger vm run` builds one)",
            );
        }
        Err(e) => return fail("image", e.to_string(), "see the error"),
    };
    let files = crate::vm::ImageFiles::of(&ctx.paths, &image);
    let dir = &files.dir;
    let manifest = match Manifest::read(&files.manifest) {
        Ok(m) => m,
        Err(e) => {
            return fail(
                "image",
                format!("{}: {e}", image.name),
                "rebuild or re-import the image",
            );
        }
    };
    for (file, expected) in &manifest.files {
        match ManifestFile::of(&dir.join(file)) {
            Ok(actual) if actual.sha256 == expected.sha256 => {}
            Ok(_) => {
                return fail(
                    "image",
                    format!("{}: {file} does not match its manifest", image.name),
                    "rebuild the image (`banger image build --force`)",
                );
            }
            Err(e) => return fail("image", format!("{}: {e}", image.name), "rebuild the image"),
        }
    }
    pass(
        "image",
        format!("default image {} matches its manifest", image.name),
    )
}

fn sidecar(ctx: &Ctx) -> Check {
    let failure = crate::sidecar::dns_failure(&ctx.paths.sidecar_lock());
    if ctx.host.sidecar.is_alive()
        && let Some(why) = failure
    {
        fail(
            "sidecar",
            format!("running, but without DNS for VM names: it {why}"),
            format!(
                "stop what listens on port {} of the bridge's address, or set dns_port in the \
                 config; then restart the sidecar (stop every VM, or kill it: its pid is in {})",
                ctx.config.dns_port,
                ctx.paths.sidecar_lock().display()
            ),
        )
    } else if ctx.host.sidecar.is_alive() {
        pass("sidecar", "running (DNS for VM names, TAP pool)")
    } else {
        pass("sidecar", "not running (starts with the first VM)")
    }
}

/// Each warm pool's size, its ready VMs and the memory they hold; a warning
/// for a pool short of VMs with no fill at work.
fn pools(ctx: &Ctx) -> Check {
    let statuses = match crate::ops::pool::status(ctx) {
        Ok(statuses) => statuses,
        Err(e) => {
            return fail(
                "warm pools",
                format!("cannot read them: {e:#}"),
                "see the error",
            );
        }
    };
    if statuses.is_empty() {
        return pass(
            "warm pools",
            "none (`banger pool set IMAGE --size N` keeps booted VMs ready)",
        );
    }
    let detail = statuses
        .iter()
        .map(|s| {
            format!(
                "{}: {} of {} ready, {} filling, holding {} of memory",
                s.pool.image,
                s.ready,
                s.pool.size,
                s.filling,
                crate::state::parse::format_size(s.memory_mib << 20)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let filling = crate::state::lock::try_acquire(&ctx.paths.pool_fill_lock())
        .map(|free| free.is_none())
        .unwrap_or(false);
    let short = statuses
        .iter()
        .any(|s| s.ready + s.filling < s.pool.size as usize);
    if short && !filling {
        warn(
            "warm pools",
            detail,
            format!(
                "a pool is short and no fill is at work: `banger gc` starts one (see {})",
                ctx.paths.pool_fill_log().display()
            ),
        )
    } else {
        pass("warm pools", detail)
    }
}

/// Whether every running VM's TAP is on the bridge (a bridge deleted and
/// made again has none of them until the sidecar attaches them again).
fn vm_taps(ctx: &Ctx) -> Check {
    let bridge = &ctx.config.bridge;
    let running: Vec<(String, String)> = match VmRead::list(ctx) {
        Ok(reads) => reads
            .into_iter()
            .flatten()
            .filter(|read| read.observed.pid.is_some())
            .filter_map(|read| Some((read.vm.name.to_string(), read.observed.handles.tap?)))
            .collect(),
        Err(e) => {
            return warn(
                "vm taps",
                format!("could not list VMs: {e:#}"),
                "see the error",
            );
        }
    };
    if running.is_empty() {
        return pass("vm taps", "no VM running");
    }
    let loose: Vec<String> = running
        .iter()
        .filter(|(_, tap)| {
            !matches!(crate::host::net::tap::bridge_of(tap), Ok(Some(on)) if &on == bridge)
        })
        .map(|(name, tap)| format!("{name} ({tap})"))
        .collect();
    if loose.is_empty() {
        pass(
            "vm taps",
            format!(
                "the TAPs of {} running VM(s) are on {bridge}",
                running.len()
            ),
        )
    } else {
        fail(
            "vm taps",
            format!("not on bridge {bridge}: {}", loose.join(", ")),
            "the sidecar attaches them again within a second; if it is not running, \
             `banger vm restart` those VMs",
        )
    }
}

fn leftovers(ctx: &Ctx) -> Check {
    // A short pool is `warm pools`' business, not a leak.
    let leaks = crate::ops::gc::collect(ctx, true)
        .map(|found| found.into_iter().filter(|r| !r.refill).collect::<Vec<_>>());
    match leaks {
        Ok(found) if found.is_empty() => pass("leftovers", "none"),
        Ok(found) => warn(
            "leftovers",
            format!("{} leaked resource(s)", found.len()),
            "run `banger gc` (see `banger gc --dry-run`)",
        ),
        Err(e) => warn(
            "leftovers",
            format!("could not check: {e:#}"),
            "run `banger gc -v`",
        ),
    }
}

/// `--boot`: boots the default image once in a throwaway VM (deleted
/// whatever happens, also on SIGINT/SIGTERM/SIGHUP) and says whether its
/// guest reached the agent within `timeout`, or what stopped it (the logs'
/// last lines go to stderr).
fn boot(ctx: &Ctx, timeout: Duration) -> Check {
    match ctx.store.default_image() {
        Ok(Some(_)) => {}
        Ok(None) => {
            return warn(
                "boot",
                "no default image to boot",
                "`banger image build default`, then `banger doctor --boot`",
            );
        }
        Err(e) => return fail("boot", e.to_string(), "see the error"),
    }
    ops::interrupt::catch();
    // Checks again whether Firecracker runs guests here: the boot below
    // makes a fresh finding (and, under `auto`, falls back to QEMU).
    if ctx.config.vmm != VmmChoice::Qemu
        && let Err(e) = ctx.store.forget_host_finding(VmmKind::Firecracker)
    {
        return fail("boot", e.to_string(), "see the error");
    }
    let spec = ops::create::Spec {
        vcpus: Some(1),
        work_size: Some(MIN_WORK_SIZE),
        nat: false,
        ..ops::create::Spec::default()
    };
    let mut timings = ctx.timings();
    let vm = match ops::create::create(ctx, &spec, false, &mut timings) {
        Ok(read) => read.vm,
        Err(e) => {
            return fail(
                "boot",
                format!("cannot create a VM: {e:#}"),
                "see the error",
            );
        }
    };
    let started = Instant::now();
    let outcome = LockedVm::lock(ctx, vm.clone())
        .and_then(|mut locked| locked.start(&mut timings).map(drop))
        .map_err(|e| (e, false))
        .and_then(|()| {
            ops::ready::wait(ctx, &vm, Some(timeout), &mut timings).map_err(|e| (e, true))
        });
    let evidence = outcome
        .is_err()
        .then(|| Evidence::read(ctx, &vm, LogMark::default()));
    let deleted = ctx
        .store
        .find_vm(vm.name.as_str())
        .map_err(anyhow::Error::from)
        .and_then(|found| match found {
            Some(found) => LockedVm::lock(ctx, found)?.delete(true),
            None => Ok(()),
        });
    let check = match (outcome, evidence) {
        (Ok(booted), _) => pass(
            "boot",
            format!(
                "a guest of image {} reached its agent in {:.1}s under {}",
                vm.image,
                started.elapsed().as_secs_f64(),
                booted.vmm
            ),
        ),
        (Err((e, waited)), Some(evidence)) => {
            if waited {
                eprint!("{evidence}");
            } else {
                eprint!("{}", evidence.logs());
            }
            let host_cannot_run = matches!(
                e.downcast_ref::<ops::ready::NotReady>(),
                Some(ops::ready::NotReady::HostCannotRun { .. })
            );
            let hint = match evidence.cause().filter(|_| waited && !host_cannot_run) {
                Some(cause) => cause.to_string(),
                None if host_cannot_run => {
                    "set vmm = \"auto\" (or \"qemu\") in the config".to_owned()
                }
                None => "see the VMM's log above".to_owned(),
            };
            fail(
                "boot",
                format!(
                    "image {} did not boot within {}: {e:#}",
                    vm.image,
                    format_duration(timeout)
                ),
                hint,
            )
        }
        (Err((e, _)), None) => fail("boot", format!("{e:#}"), "see the error"),
    };
    match deleted {
        Ok(()) => check,
        Err(e) => fail(
            "boot",
            format!(
                "{}; and the throwaway VM {} was not deleted: {e:#}",
                check.detail, vm.name
            ),
            format!("`banger vm rm {}`", vm.name),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    #[test]
    fn kvm_hints_fit_the_user() {
        assert_eq!(kvm_hint(ErrorKind::PermissionDenied, false), NEEDS_ROOT);
        assert!(!kvm_hint(ErrorKind::PermissionDenied, true).contains("VT-x"));
        assert!(kvm_hint(ErrorKind::NotFound, true).contains("VT-x"));
        assert!(kvm_hint(ErrorKind::NotFound, false).contains("VT-x"));
    }
}
