//! The dm-snapshot root disk through the real CLI, on a host with
//! device-mapper (scripts/test-in-guest.sh runs these in a Debian guest that
//! has it): create and start with the fake VMM (which holds the disks open
//! as a VMM would), stop, delete, and nothing of the snapshot is left; a
//! `--disk-size` larger than the image is padded with zeros; what is written
//! to the root disk survives stop and start while the image stays as it
//! was; `gc` after a crash in each stage that makes or unmakes the snapshot
//! leaves no device behind.
#![cfg(feature = "fault-injection")]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use banger::host::disk::dm;
use banger_testkit::{Args, Need, TestContext, create_small, require};
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// Removes the snapshots (and padded bases) of `ids` when dropped, before
/// the context detaches its loop devices, so a failing test leaks nothing.
struct DmCleanup(Vec<String>);

impl Drop for DmCleanup {
    fn drop(&mut self) {
        for id in &self.0 {
            for name in dm::list("banger-").unwrap_or_default() {
                if !name.contains(id.as_str()) {
                    continue;
                }
                let _ = dm::remove(&name);
            }
        }
    }
}

/// A context on the fake VMM with a 64 MiB image `base`, or `None` (after
/// saying why) without root or device-mapper.
#[track_caller]
fn context() -> Option<TestContext> {
    let (kernel, vmm) = (banger_testkit::vmlinux(), banger_testkit::vmm_fake());
    let needs = [
        Need::Root,
        Need::File(&kernel),
        Need::File(&vmm),
        Need::That(
            dm::available(),
            "no device-mapper (scripts/test-in-guest.sh runs this in a guest that has it)",
        ),
    ];
    if require("dm-snapshot", &needs).is_some() {
        return None;
    }
    let mut ctx = TestContext::new(&vmm);
    // The fake plays Firecracker; `auto` would pick QEMU in a guest without KVM.
    ctx.set_vmm("firecracker");
    ctx.import_image("base");
    Some(ctx)
}

/// Creates and starts VM `name` with `more` flags; returns its id.
fn create(ctx: &TestContext, name: &str, more: &[&str]) -> String {
    let vm = ctx.json(&create_small(name).with(&["--no-wait", "--json"]).with(more));
    vm["id"].as_str().expect("an id").to_owned()
}

/// The device-mapper devices of VM `id` (whichever home made them).
fn devices(id: &str) -> Vec<String> {
    let mut found: Vec<String> = dm::list("banger-")
        .expect("dmsetup ls")
        .into_iter()
        .filter(|name| name.contains(id))
        .collect();
    found.sort();
    found
}

/// The name banger gives VM `id`'s snapshot in `ctx`'s home.
fn dm_name(ctx: &TestContext, id: &str) -> String {
    use banger::state::layout::{HomeTag, dm};
    dm(
        &HomeTag::of(&ctx.home),
        &banger::state::ids::VmId::parse(id).expect("a VM id"),
    )
}

/// The root device the VM's journal names while it runs.
fn root_device(ctx: &TestContext, id: &str) -> PathBuf {
    let path = ctx.home.join("vms").join(id).join("handles.json");
    let text = std::fs::read_to_string(&path).expect("read handles.json");
    let handles: Value = serde_json::from_str(&text).expect("handles.json is JSON");
    PathBuf::from(
        handles["dm_dev"]
            .as_str()
            .expect("a dm_dev in handles.json"),
    )
}

fn size_of(dev: &Path) -> u64 {
    let mut file = File::open(dev).expect("open the root device");
    std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0)).expect("seek to the end")
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    File::open(path)
        .expect("open")
        .read_exact_at(&mut buf, offset)
        .expect("read");
    buf
}

/// Writes `data` at `offset` of the block device `dev` and flushes it, as the
/// guest would write its root disk.
fn write_at(dev: &Path, offset: u64, data: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .open(dev)
        .expect("open the root device for writing");
    file.write_all_at(data, offset).expect("write");
    file.sync_all().expect("flush");
}

/// The image's rootfs file (what the snapshot's origin reads).
fn image_rootfs(ctx: &TestContext) -> PathBuf {
    let dir = ctx.home.join("images");
    std::fs::read_dir(&dir)
        .expect("read the images dir")
        .flatten()
        .map(|e| e.path().join("rootfs.ext4"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no rootfs.ext4 under {}", dir.display()))
}

#[test]
fn a_vm_on_a_dm_snapshot_runs_stops_and_deletes_leaving_no_device() {
    let Some(ctx) = context() else { return };
    let id = create(&ctx, "web", &[]);
    let _cleanup = DmCleanup(vec![id.clone()]);

    let vm = ctx.show("web");
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(vm["cow_strategy"], "dm-snapshot", "{vm:#}");
    assert_eq!(devices(&id), [dm_name(&ctx, &id)]);
    assert_eq!(ctx.loops().len(), 2, "a base and a COW loop device");
    assert_eq!(size_of(&root_device(&ctx, &id)), 64 * MIB);

    ctx.ok(["vm", "stop", "web"]);
    assert_eq!(devices(&id), Vec::<String>::new(), "after stop");
    assert_eq!(ctx.loops(), Vec::<String>::new(), "after stop");
    assert_eq!(ctx.show("web")["cow_strategy"], "dm-snapshot");

    ctx.ok(["vm", "start", "web", "--no-wait"]);
    assert_eq!(devices(&id), [dm_name(&ctx, &id)], "after start");
    ctx.ok(["vm", "delete", "web", "--force"]);
    assert_eq!(ctx.listed("web"), None);
    assert_eq!(devices(&id), Vec::<String>::new(), "after delete");
    ctx.assert_nothing_left("after delete");
}

#[test]
fn a_disk_larger_than_the_image_is_the_image_then_zeros() {
    let Some(ctx) = context() else { return };
    let id = create(&ctx, "big", &["--disk-size", "256M"]);
    let _cleanup = DmCleanup(vec![id.clone()]);
    let name = dm_name(&ctx, &id);
    let base = dm::base_name(&name);
    let mut expected = vec![name.clone(), base.clone()];
    expected.sort();
    let mut found = devices(&id);
    found.sort();
    assert_eq!(found, expected);

    let table = banger_testkit::run("dmsetup", &["table", &base]);
    let targets: Vec<(&str, &str, &str)> = table
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[0], w[1], w[2])
        })
        .collect();
    let image_sectors = (64 * MIB / 512).to_string();
    let rest = ((256 - 64) * MIB / 512).to_string();
    assert_eq!(
        targets,
        [
            ("0", image_sectors.as_str(), "linear"),
            (image_sectors.as_str(), rest.as_str(), "zero")
        ],
        "{table}"
    );

    let dev = root_device(&ctx, &id);
    assert_eq!(size_of(&dev), 256 * MIB);
    let image = image_rootfs(&ctx);
    assert_eq!(read_at(&dev, 1024, 2048), read_at(&image, 1024, 2048));
    assert!(read_at(&dev, 200 * MIB, 4096).iter().all(|&b| b == 0));
    ctx.ok(["vm", "delete", "big", "--force"]);
    assert_eq!(devices(&id), Vec::<String>::new(), "after delete");
    ctx.assert_nothing_left("after delete");
}

#[test]
fn root_disk_writes_survive_stop_and_start_and_never_reach_the_image() {
    let Some(ctx) = context() else { return };
    let id = create(&ctx, "keep", &["--disk-size", "128M"]);
    let _cleanup = DmCleanup(vec![id.clone()]);
    let image = image_rootfs(&ctx);
    let image_before = std::fs::read(&image).expect("read the image");

    // One write inside the image's extent, one in the zero padding.
    let marks: [(u64, &[u8]); 2] = [
        (40 * MIB, b"inside-the-image"),
        (100 * MIB, b"in-the-padding"),
    ];
    let dev = root_device(&ctx, &id);
    for (offset, mark) in marks {
        write_at(&dev, offset, mark);
    }
    ctx.ok(["vm", "stop", "keep"]);
    assert_eq!(devices(&id), Vec::<String>::new(), "after stop");
    ctx.ok(["vm", "start", "keep", "--no-wait"]);

    let dev = root_device(&ctx, &id);
    for (offset, mark) in marks {
        assert_eq!(
            read_at(&dev, offset, mark.len()),
            mark,
            "at {} MiB after stop and start",
            offset / MIB
        );
    }
    assert!(
        std::fs::read(&image).expect("read the image") == image_before,
        "the image's rootfs changed"
    );
    ctx.ok(["vm", "delete", "keep", "--force"]);
    assert_eq!(devices(&id), Vec::<String>::new(), "after delete");
    ctx.assert_nothing_left("after delete");
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Start,
    Stop,
    Delete,
}

/// Runs `op` on VM `name` with a fault after `stage`, then checks that the
/// list works, that `gc` leaves no device of the VM, and that it can be
/// deleted.
fn crash_after(ctx: &TestContext, cleanup: &mut DmCleanup, op: Op, stage: &str, name: &str) {
    let what = format!("{op:?} aborted after {stage:?}");
    let args = match op {
        Op::Create => create_small(name).with(&["--no-wait", "--disk-size", "96M"]),
        Op::Start => Args::new(&["vm", "start", name, "--no-wait"]),
        Op::Stop => Args::new(&["vm", "stop", name, "--force"]),
        Op::Delete => Args::new(&["vm", "delete", name, "--force"]),
    };
    match op {
        Op::Create => {}
        Op::Start => {
            let id = create(ctx, name, &["--disk-size", "96M"]);
            cleanup.0.push(id);
            ctx.ok(["vm", "stop", name]);
        }
        Op::Stop | Op::Delete => cleanup.0.push(create(ctx, name, &["--disk-size", "96M"])),
    }
    let out = ctx
        .cmd(&args)
        .env("BANGER_FAULT", stage)
        .output()
        .expect("run banger");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{what}: the command did not abort ({})\n{stderr}",
        out.status
    );
    let id = ctx
        .listed(name)
        .map(|vm| vm["id"].as_str().expect("an id").to_owned());
    if let Some(id) = &id {
        cleanup.0.push(id.clone());
    }

    let vm = ctx.listed(name);
    if let Some(vm) = &vm {
        assert_eq!(vm["state"], "stopped", "{what}: {vm:#}");
    }
    let gc = ctx.ok(["gc"]);
    if let Some(id) = &id {
        assert_eq!(devices(id), Vec::<String>::new(), "{what}: after gc:\n{gc}");
    }
    assert_eq!(ctx.loops(), Vec::<String>::new(), "{what}: after gc:\n{gc}");
    if vm.is_some() {
        ctx.ok(["vm", "delete", name, "--force"]);
    }
    ctx.assert_nothing_left(&format!("{what}, after gc and delete"));
}

/// Aborted commands would otherwise leave core files where the tests run.
fn no_core_dumps() {
    // SAFETY: setrlimit only reads the struct passed, which outlives the
    // call, and changes only this process's limits (inherited by the
    // commands it runs). A hard limit above the current one is kept as is.
    let rc = unsafe {
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_CORE, &mut current);
        libc::setrlimit(
            libc::RLIMIT_CORE,
            &libc::rlimit {
                rlim_cur: 0,
                rlim_max: current.rlim_max,
            },
        )
    };
    assert_eq!(rc, 0, "setrlimit(RLIMIT_CORE)");
}

#[test]
fn gc_after_a_crash_in_each_dm_stage_leaves_no_device() {
    let Some(ctx) = context() else { return };
    no_core_dumps();
    let mut cleanup = DmCleanup(Vec::new());
    let cases = [
        (Op::Create, "disks"),
        (Op::Create, "root disk"),
        (Op::Create, "tap"),
        (Op::Create, "spawn"),
        (Op::Create, "configure"),
        (Op::Start, "root disk"),
        (Op::Start, "spawn"),
        (Op::Stop, "stop:vmm"),
        (Op::Stop, "stop:teardown"),
        (Op::Delete, "delete:stop"),
    ];
    for (i, (op, stage)) in cases.into_iter().enumerate() {
        crash_after(&ctx, &mut cleanup, op, stage, &format!("crash{i}"));
    }
}
