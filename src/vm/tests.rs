//! The lifecycle against the fake host: every stage of a start failing and
//! rolled back, reconcile of every interrupted operation, teardown of
//! resources already gone, status guards, and gc's sweep.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::fake::TestBed;
use super::{LockedVm, VmRead, VmStatus};
use crate::ops;
use crate::state::handles::{Handles, Loaded};
use crate::state::model::{CowStrategy, Pending, PublishedPort, Vm, VmName, VmState};

fn spec(name: &str) -> ops::create::Spec {
    ops::create::Spec {
        name: Some(VmName::parse(name).unwrap()),
        image: Some("base".into()),
        work_size: Some(1 << 20),
        nat: true,
        ..ops::create::Spec::default()
    }
}

fn create(bed: &TestBed, name: &str, start: bool) -> anyhow::Result<Vm> {
    let mut timings = bed.ctx.timings();
    ops::create::create(&bed.ctx, &spec(name), start, &mut timings).map(|read| read.vm)
}

fn row(bed: &TestBed, name: &str) -> Vm {
    bed.ctx.store.vm(name).unwrap()
}

fn handles(bed: &TestBed, vm: &Vm) -> Loaded {
    Handles::load(&bed.ctx.paths.vm_dir(&vm.id))
}

/// The named VM as `vm ls` sees it (reconciled, its lock being free).
fn reconciled(bed: &TestBed, name: &str) -> VmRead {
    VmRead::reconciled(&bed.ctx, row(bed, name))
        .unwrap()
        .unwrap()
}

/// The key tagging the VM's nftables rules.
fn key(bed: &TestBed, vm: &Vm) -> String {
    crate::vm::resources::rule_key(&bed.ctx.paths, &vm.id)
}

/// Marks a row as if a command had died midway through `pending`.
fn interrupt(bed: &TestBed, vm: &Vm, desired: VmState, pending: Pending) {
    bed.ctx
        .store
        .set_state(&vm.id, desired, Some(pending), None)
        .unwrap();
}

#[test]
fn a_started_vm_holds_every_resource_in_its_journal() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    let world = bed.fake.world();
    let tap = format!("bg-{}", vm.id);
    assert!(world.links.contains(&tap), "{:?}", world.links);
    assert!(world.rules.contains(&key(&bed, &vm)));
    assert_eq!(world.vmms.len(), 1);
    assert_eq!(world.configured.len(), 1);
    assert!(world.sidecar_alive);
    drop(world);
    let Loaded::Found(journal) = handles(&bed, &vm) else {
        panic!("no handles.json");
    };
    assert_eq!(journal.tap.as_deref(), Some(tap.as_str()));
    assert!(journal.pid.is_some() && journal.nat);
    let vm = row(&bed, "a");
    assert_eq!(
        (vm.desired, vm.pending, vm.last_error),
        (VmState::Running, None, None)
    );
    assert_eq!(vm.cow_strategy, Some(CowStrategy::Copy));
}

#[test]
fn the_root_disk_is_dm_then_reflink_then_overlay_then_copy() {
    // (dm, reflink, banger's initramfs) → strategy.
    let cases = [
        ((true, true, true), CowStrategy::DmSnapshot),
        ((true, false, false), CowStrategy::DmSnapshot),
        ((false, true, true), CowStrategy::Reflink),
        ((false, true, false), CowStrategy::Reflink),
        ((false, false, true), CowStrategy::Overlay),
        ((false, false, false), CowStrategy::Copy),
    ];
    for ((dm, reflink, seeded), want) in cases {
        let bed = TestBed::new().unwrap();
        if seeded {
            bed.boot_banger_initramfs().unwrap();
        }
        {
            let mut world = bed.fake.world();
            world.dm = dm;
            world.reflink = reflink;
        }
        let vm = create(&bed, "a", false).unwrap();
        let case = format!("dm {dm}, reflink {reflink}, banger's initramfs {seeded}");
        assert_eq!(vm.cow_strategy, Some(want), "{case}");
        assert_eq!(row(&bed, "a").cow_strategy, Some(want), "{case}");
        let files = crate::vm::VmFiles::of(&bed.ctx.paths, &vm);
        assert_eq!(files.upper.exists(), want == CowStrategy::Overlay, "{case}");
        assert_eq!(files.seed.exists(), seeded, "{case}");
    }
}

#[test]
fn an_image_with_banger_s_initramfs_gets_a_seed_and_no_disk_writes() {
    use std::os::unix::fs::PermissionsExt;
    let bed = TestBed::new().unwrap();
    bed.boot_banger_initramfs().unwrap();
    let vm = create(&bed, "a", false).unwrap();
    let calls = bed.fake.world().calls.clone();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("grow_ext4") || c.starts_with("write_ext4_file")),
        "{calls:?}"
    );
    let files = crate::vm::VmFiles::of(&bed.ctx.paths, &vm);
    let mode = std::fs::metadata(&files.seed).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&files.work).unwrap().len(),
        1 << 20,
        "the work disk is sized to --work-size"
    );
    // The host key is pinned before the VM ever boots, under its IP and name.
    let pinned = std::fs::read_to_string(&files.host_key_pub).unwrap();
    assert!(pinned.starts_with("ssh-ed25519 "), "{pinned}");
    let known = std::fs::read_to_string(bed.ctx.paths.known_hosts()).unwrap();
    let key = pinned.split_whitespace().nth(1).unwrap();
    for host in [vm.ip.to_string(), "a.vm".to_owned()] {
        assert!(
            known.lines().any(|l| l.contains(&host) && l.contains(key)),
            "{host} not pinned:\n{known}"
        );
    }
    let seed = std::fs::read(&files.seed).unwrap();
    assert!(
        String::from_utf8_lossy(&seed).contains(key),
        "the seed carries the pinned key"
    );

    // Without banger's initramfs: banger's key goes into the work disk.
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "b", false).unwrap();
    assert!(
        bed.fake
            .world()
            .calls
            .iter()
            .any(|c| c.starts_with("write_ext4_file") && c.ends_with("/.ssh/authorized_keys")),
    );
    let files = crate::vm::VmFiles::of(&bed.ctx.paths, &vm);
    assert!(!files.seed.exists() && !files.host_key_pub.exists());
}

#[test]
fn an_overlay_vm_boots_the_image_rootfs_read_only_under_its_upper_disk() {
    let bed = TestBed::new().unwrap();
    bed.boot_banger_initramfs().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    let files = crate::vm::VmFiles::of(&bed.ctx.paths, &vm);
    let config = bed.fake.world().last_config.clone().unwrap();
    let image = bed.ctx.paths.image_dir("base");
    assert_eq!(config.rootfs, image.join("rootfs.ext4"));
    assert!(config.root_read_only);
    assert_eq!(config.upper.as_deref(), Some(files.upper.as_path()));
    assert_eq!(config.seed.as_deref(), Some(files.seed.as_path()));
    assert_eq!(std::fs::metadata(&files.upper).unwrap().len(), vm.disk_size);
    LockedVm::open(&bed.ctx, "a").unwrap().delete(true).unwrap();
    assert!(!files.upper.exists() && !files.seed.exists());
}

/// Every operation a start makes, as the fake logs it.
const START_STAGES: &[&str] = &[
    "ensure_bridge",
    "claim_pool_tap",
    "create_tap",
    "binary",
    "spawn",
    "wait_for_socket",
    "configure_and_start",
    "add_vm_rules",
    "ensure_sidecar",
];

#[test]
fn a_start_failing_at_any_stage_releases_everything_and_says_why() {
    for &stage in START_STAGES {
        let bed = TestBed::new().unwrap();
        create(&bed, "a", false).unwrap();
        bed.fake.world().fail = Some(stage);
        let mut vm = LockedVm::open(&bed.ctx, "a").unwrap();
        let err = vm.start(&mut bed.ctx.timings()).unwrap_err();
        assert!(format!("{err:#}").contains(stage), "{stage}: {err:#}");
        assert_eq!(vm.status(), VmStatus::Stopped, "{stage}");
        drop(vm);
        let world = bed.fake.world();
        assert!(world.is_clean(), "{stage}: {world:#?}");
        drop(world);
        let vm = row(&bed, "a");
        assert_eq!(vm.desired, VmState::Stopped, "{stage}");
        assert_eq!(vm.pending, None, "{stage}");
        let last_error = vm.last_error.clone().unwrap_or_default();
        assert!(last_error.contains(stage), "{stage}: {last_error}");
        assert!(matches!(handles(&bed, &vm), Loaded::Missing), "{stage}");

        // Once the host behaves, the same VM starts.
        bed.fake.world().fail = None;
        let mut vm = LockedVm::open(&bed.ctx, "a").unwrap();
        vm.start(&mut bed.ctx.timings()).unwrap();
        assert_eq!(vm.status(), VmStatus::Running, "{stage}");
    }
}

#[test]
fn a_dm_snapshot_start_failing_releases_its_devices() {
    for stage in [
        "attach_loop",
        "create_snapshot",
        "spawn",
        "configure_and_start",
    ] {
        let bed = TestBed::new().unwrap();
        bed.fake.world().dm = true;
        create(&bed, "a", false).unwrap();
        assert_eq!(row(&bed, "a").cow_strategy, Some(CowStrategy::DmSnapshot));
        bed.fake.world().fail = Some(stage);
        let mut vm = LockedVm::open(&bed.ctx, "a").unwrap();
        vm.start(&mut bed.ctx.timings()).unwrap_err();
        let world = bed.fake.world();
        assert!(world.is_clean(), "{stage}: {world:#?}");
    }
}

#[test]
fn disks_failing_at_create_leave_no_vm() {
    for stage in ["clone_file", "grow_ext4", "write_ext4_file"] {
        let bed = TestBed::new().unwrap();
        bed.fake.world().fail = Some(stage);
        let err = create(&bed, "a", true).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot make the disks of VM a"),
            "{err:#}"
        );
        assert!(bed.ctx.store.find_vm("a").unwrap().is_none(), "{stage}");
        assert!(bed.fake.world().is_clean());
        let vms: Vec<_> = std::fs::read_dir(bed.ctx.paths.vms_dir())
            .unwrap()
            .collect();
        assert!(vms.is_empty(), "{stage}: {vms:?}");
    }
}

#[test]
fn a_failed_start_at_create_leaves_the_vm_stopped_with_its_error() {
    let bed = TestBed::new().unwrap();
    bed.fake.world().fail = Some("configure_and_start");
    let err = create(&bed, "a", true).unwrap_err();
    assert!(
        format!("{err:#}").contains("VM a was created but did not start; it is left stopped"),
        "{err:#}"
    );
    let vm = row(&bed, "a");
    assert_eq!(vm.pending, None);
    assert!(vm.last_error.is_some());
}

#[test]
fn reconcile_kills_the_vmm_of_an_interrupted_start() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    interrupt(&bed, &vm, VmState::Running, Pending::Start);
    let vm = LockedVm::open(&bed.ctx, "a").unwrap();
    assert_eq!(vm.status(), VmStatus::Stopped);
    let message = vm.vm().last_error.clone().unwrap_or_default();
    assert!(message.contains("its start was interrupted"), "{message}");
    assert!(message.contains("`banger vm start a`"), "{message}");
    drop(vm);
    assert!(bed.fake.world().is_clean());
}

#[test]
fn reconcile_leaves_the_live_vmm_of_an_interrupted_stop() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    interrupt(&bed, &vm, VmState::Stopped, Pending::Stop);
    let read = reconciled(&bed, "a");
    assert_eq!(read.status(), VmStatus::Stopping);
    assert_eq!(read.observed.state(), VmState::Running);
    let message = read.last_error().unwrap_or_default();
    assert!(
        message.contains("`banger vm stop a` finishes it"),
        "{message}"
    );
    assert_eq!(bed.fake.world().vmms.len(), 1, "the VMM was killed");

    // The next stop finishes it.
    let mut vm = LockedVm::open(&bed.ctx, "a").unwrap();
    vm.stop(Duration::from_secs(1), true).unwrap();
    assert_eq!(vm.status(), VmStatus::Stopped);
    assert_eq!(vm.vm().last_error, None);
    drop(vm);
    assert!(bed.fake.world().is_clean());
}

#[test]
fn reconcile_finishes_an_interrupted_stop_whose_vmm_is_gone() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    interrupt(&bed, &vm, VmState::Stopped, Pending::Stop);
    bed.fake.world().vmms.clear();
    let read = reconciled(&bed, "a");
    assert_eq!(read.status(), VmStatus::Stopped);
    let message = read.last_error().unwrap_or_default();
    assert!(
        message.contains("was interrupted; it is stopped now"),
        "{message}"
    );
    assert!(bed.fake.world().is_clean());
}

#[test]
fn a_vmm_that_died_on_its_own_is_reported_and_released() {
    let bed = TestBed::new().unwrap();
    create(&bed, "a", true).unwrap();
    bed.fake.world().vmms.clear();
    let read = reconciled(&bed, "a");
    assert_eq!(read.status(), VmStatus::Stopped);
    let message = read.last_error().unwrap_or_default();
    assert!(message.contains("the VMM exited unexpectedly"), "{message}");
    assert!(bed.fake.world().is_clean());
}

#[test]
fn an_unfinished_create_can_only_be_deleted() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", false).unwrap();
    interrupt(&bed, &vm, VmState::Stopped, Pending::Create);
    let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
    assert_eq!(locked.status(), VmStatus::Creating);
    let err = locked.start(&mut bed.ctx.timings()).unwrap_err();
    assert!(err.to_string().contains("creation did not finish"), "{err}");
    assert!(err.to_string().contains("`banger vm delete a`"), "{err}");
    assert!(
        bed.fake.world().vmms.is_empty(),
        "a half-made VM was started"
    );
    locked.delete(false).unwrap();
    assert!(bed.ctx.store.find_vm("a").unwrap().is_none());
    assert!(!bed.ctx.paths.vm_dir(&vm.id).exists());
}

#[test]
fn an_interrupted_delete_is_finished_by_the_next() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
    locked.stop(Duration::from_secs(1), false).unwrap();
    drop(locked);
    interrupt(&bed, &vm, VmState::Stopped, Pending::Delete);
    let locked = LockedVm::open(&bed.ctx, "a").unwrap();
    assert_eq!(locked.status(), VmStatus::Deleting);
    let read = locked.read();
    assert!(
        read.last_error()
            .unwrap_or_default()
            .contains("run `banger vm delete a` again")
    );
    locked.delete(false).unwrap();
    assert!(bed.ctx.store.find_vm("a").unwrap().is_none());
}

#[test]
fn teardown_tolerates_resources_already_gone() {
    let bed = TestBed::new().unwrap();
    bed.fake.world().dm = true;
    let vm = create(&bed, "a", true).unwrap();
    // Everything the journal names vanishes behind banger's back.
    {
        let mut world = bed.fake.world();
        world.vmms.clear();
        world.links.clear();
        world.rules.clear();
        world.loops.clear();
        world.snapshots.clear();
    }
    let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
    assert_eq!(locked.status(), VmStatus::Stopped);
    assert!(matches!(handles(&bed, &vm), Loaded::Missing));
    locked.stop(Duration::from_secs(1), false).unwrap();
    locked.delete(false).unwrap();
}

#[test]
fn a_failed_release_keeps_the_journal_and_names_the_resource() {
    let bed = TestBed::new().unwrap();
    let vm = create(&bed, "a", true).unwrap();
    bed.fake.world().fail = Some("remove_vm_rules");
    let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
    let err = locked.stop(Duration::from_secs(1), false).unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("NAT rules") && text.contains("`banger gc` retries"),
        "{text}"
    );
    assert!(matches!(handles(&bed, &vm), Loaded::Found(_)));
    // The other kinds were still released.
    let world = bed.fake.world();
    assert!(world.vmms.is_empty());
    assert!(!world.links.contains(&format!("bg-{}", vm.id)));
}

#[test]
fn a_released_tap_returns_to_the_pool_while_the_sidecar_runs() {
    let bed = TestBed::new().unwrap();
    create(&bed, "a", true).unwrap();
    let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
    locked.stop(Duration::from_secs(1), false).unwrap();
    assert!(bed.fake.world().links.contains("bgpool0"));
    drop(locked);
    // Without a sidecar the next VM's TAP is deleted instead.
    create(&bed, "b", true).unwrap();
    bed.fake.world().sidecar_alive = false;
    let mut locked = LockedVm::open(&bed.ctx, "b").unwrap();
    locked.stop(Duration::from_secs(1), false).unwrap();
    let links = bed.fake.world().links.clone();
    assert_eq!(links.into_iter().collect::<Vec<_>>(), Vec::<String>::new());
}

#[test]
fn gc_sweeps_what_no_live_vm_owns_and_nothing_else() {
    let bed = TestBed::new().unwrap();
    let keep = create(&bed, "keep", true).unwrap();
    let gone = create(&bed, "gone", true).unwrap();
    // "gone" is deleted behind banger's back: only its row disappears.
    bed.ctx.store.delete_vm(&gone.id).unwrap();
    {
        let mut world = bed.fake.world();
        world.links.insert("eth0".into());
        world.links.insert("bg-xyz".into());
        world.rules.insert("not-an-id".into());
    }
    let dry = ops::gc::collect(&bed.ctx, true).unwrap();
    let kinds: Vec<_> = dry.iter().map(|r| r.kind).collect();
    assert!(
        kinds.contains(&"process") && kinds.contains(&"tap") && kinds.contains(&"nat-rules"),
        "{dry:#?}"
    );
    assert!(
        bed.fake.world().rules.contains(&key(&bed, &gone)),
        "a dry run removed rules"
    );

    let removed = ops::gc::collect(&bed.ctx, false).unwrap();
    assert_eq!(removed, dry);
    let world = bed.fake.world();
    assert!(world.rules.contains(&key(&bed, &keep)));
    assert!(!world.rules.contains(&key(&bed, &gone)));
    assert!(world.links.contains(&format!("bg-{}", keep.id)));
    assert!(!world.links.contains(&format!("bg-{}", gone.id)));
    for foreign in ["eth0", "bg-xyz"] {
        assert!(world.links.contains(foreign), "gc removed {foreign}");
    }
    assert!(world.rules.contains("not-an-id"));
    assert_eq!(world.vmms.len(), 1);
}

#[test]
fn gc_deletes_abandoned_and_expired_vms_but_not_running_ones() {
    let bed = TestBed::new().unwrap();
    let half = create(&bed, "half", false).unwrap();
    interrupt(&bed, &half, VmState::Stopped, Pending::Create);
    let old = create(&bed, "old", true).unwrap();
    bed.ctx
        .store
        .set_expiry(&old.id, Some(crate::state::model::now() - 1))
        .unwrap();
    create(&bed, "fine", true).unwrap();
    let removed = ops::gc::collect(&bed.ctx, false).unwrap();
    let vms: Vec<_> = removed
        .iter()
        .filter(|r| r.kind == "vm")
        .map(|r| (r.target.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        vms,
        [
            ("half", "its creation did not finish"),
            ("old", "its --ttl expired")
        ]
    );
    let names: Vec<_> = bed
        .ctx
        .store
        .list_vms()
        .unwrap()
        .into_iter()
        .map(|vm| vm.name.to_string())
        .collect();
    assert_eq!(names, ["fine"]);
}

#[test]
fn sizes_below_the_image_s_are_refused_before_anything_is_made() {
    let bed = TestBed::new().unwrap();
    let mut timings = bed.ctx.timings();
    let small_work = ops::create::Spec {
        work_size: Some(1 << 10),
        ..spec("a")
    };
    let err = ops::create::create(&bed.ctx, &small_work, false, &mut timings).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--work-size 1K is smaller than image base's work seed; its minimum is 64K"
    );
    let small_disk = ops::create::Spec {
        disk_size: Some(1 << 10),
        ..spec("a")
    };
    let err = ops::create::create(&bed.ctx, &small_disk, false, &mut timings).unwrap_err();
    assert_eq!(
        err.to_string(),
        "--disk-size 1K is smaller than image base's root filesystem (1M)"
    );
    assert!(bed.ctx.store.list_vms().unwrap().is_empty());
    assert!(
        bed.fake.world().calls.is_empty(),
        "{:?}",
        bed.fake.world().calls
    );
}

fn published(specs: &[&str]) -> Vec<PublishedPort> {
    specs
        .iter()
        .map(|s| PublishedPort::parse(s).unwrap())
        .collect()
}

fn create_publishing(bed: &TestBed, name: &str, nat: bool, specs: &[&str]) -> anyhow::Result<Vm> {
    let spec = ops::create::Spec {
        nat,
        published: published(specs),
        ..spec(name)
    };
    let mut timings = bed.ctx.timings();
    ops::create::create(&bed.ctx, &spec, true, &mut timings).map(|read| read.vm)
}

fn ports_of(bed: &TestBed, vm: &Vm) -> Option<Vec<PublishedPort>> {
    bed.fake.world().ports.get(&key(bed, vm)).cloned()
}

#[test]
fn published_ports_are_added_at_start_and_removed_at_stop_and_delete() {
    for nat in [true, false] {
        let bed = TestBed::new().unwrap();
        let vm = create_publishing(&bed, "a", nat, &["2222:22", "0.0.0.0:5353:53/udp"]).unwrap();
        assert_eq!(
            ports_of(&bed, &vm),
            Some(published(&["2222:22", "0.0.0.0:5353:53/udp"]))
        );
        let Loaded::Found(journal) = handles(&bed, &vm) else {
            panic!("no handles.json");
        };
        assert!(journal.ports);

        let mut locked = LockedVm::open(&bed.ctx, "a").unwrap();
        bed.fake.world().calls.clear();
        locked.stop(Duration::from_secs(1), false).unwrap();
        assert_eq!(ports_of(&bed, &vm), None, "nat {nat}");
        assert!(bed.fake.world().is_clean(), "nat {nat}");
        // With NAT, removing the VM's rules removes its ports too: the port
        // rules are not looked for a second time.
        let calls = bed.fake.world().calls.clone();
        let port_removals = calls
            .iter()
            .filter(|c| **c == format!("remove_port_rules {}", key(&bed, &vm)))
            .count();
        assert_eq!(port_removals, usize::from(!nat), "{calls:?}");

        // They are the VM's, and come back with its next start.
        assert_eq!(row(&bed, "a").published, vm.published);
        locked.start(&mut bed.ctx.timings()).unwrap();
        assert_eq!(ports_of(&bed, &vm), Some(vm.published.clone()));
        locked.delete(false).unwrap();
        assert!(bed.fake.world().is_clean(), "nat {nat}");
    }
}

#[test]
fn a_vm_publishing_nothing_makes_no_port_calls() {
    let bed = TestBed::new().unwrap();
    create(&bed, "a", true).unwrap();
    let calls = bed.fake.world().calls.clone();
    assert!(!calls.iter().any(|c| c.contains("port")), "{calls:?}");
}

#[test]
fn a_start_failing_at_the_port_stage_rolls_back_everything() {
    for stage in ["check_port_free", "add_port_rules"] {
        for nat in [true, false] {
            let bed = TestBed::new().unwrap();
            bed.fake.world().fail = Some(stage);
            let err = create_publishing(&bed, "a", nat, &["2222:22"]).unwrap_err();
            assert!(format!("{err:#}").contains(stage), "{stage}: {err:#}");
            let world = bed.fake.world();
            assert!(world.is_clean(), "{stage}: {world:#?}");
            drop(world);
            if stage == "check_port_free" {
                // Checked before anything is made.
                assert!(bed.ctx.store.find_vm("a").unwrap().is_none());
                continue;
            }
            let vm = row(&bed, "a");
            assert_eq!((vm.desired, vm.pending), (VmState::Stopped, None));
            assert!(matches!(handles(&bed, &vm), Loaded::Missing));
        }
    }
}

#[test]
fn a_port_taken_on_the_host_or_by_another_vm_refuses_the_create_and_makes_nothing() {
    let bed = TestBed::new().unwrap();
    bed.fake.world().in_use = published(&["0.0.0.0:8080:1"]);
    let err = create_publishing(&bed, "a", true, &["8080:80"]).unwrap_err();
    assert!(format!("{err:#}").contains("already in use"), "{err:#}");
    assert!(bed.ctx.store.find_vm("a").unwrap().is_none());

    create_publishing(&bed, "b", true, &["2222:22"]).unwrap();
    bed.fake.world().calls.clear();
    let err = create_publishing(&bed, "c", true, &["0.0.0.0:2222:22"]).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        "host port 0.0.0.0:2222/tcp is already published by VM b"
    );
    assert!(bed.ctx.store.find_vm("c").unwrap().is_none());
    let dirs: Vec<_> = std::fs::read_dir(bed.ctx.paths.vms_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dirs.len(), 1, "only b has files: {dirs:?}");
    let calls = bed.fake.world().calls.clone();
    assert!(
        !calls.iter().any(|c| c.starts_with("clone_file")),
        "{calls:?}"
    );

    let err = create_publishing(&bed, "d", true, &["9000:1", "0.0.0.0:9000:2"]).unwrap_err();
    assert!(err.downcast_ref::<ops::UsageError>().is_some(), "{err:#}");
}

#[test]
fn the_ports_of_a_dead_vmm_are_released_by_reconcile() {
    for nat in [true, false] {
        let bed = TestBed::new().unwrap();
        let vm = create_publishing(&bed, "a", nat, &["2222:22"]).unwrap();
        bed.fake.world().vmms.clear();
        let read = reconciled(&bed, "a");
        assert_eq!(read.status(), VmStatus::Stopped);
        assert_eq!(ports_of(&bed, &vm), None);
        assert!(bed.fake.world().is_clean(), "nat {nat}");
    }
}

#[test]
fn gc_sweeps_the_ports_of_vms_that_do_not_run() {
    let bed = TestBed::new().unwrap();
    let keep = create_publishing(&bed, "keep", false, &["2222:22"]).unwrap();
    let gone = create_publishing(&bed, "gone", false, &["2223:22"]).unwrap();
    bed.ctx.store.delete_vm(&gone.id).unwrap();
    let removed = ops::gc::collect(&bed.ctx, false).unwrap();
    assert!(
        removed
            .iter()
            .any(|r| r.kind == "nat-rules" && r.target == gone.id.as_str()),
        "{removed:#?}"
    );
    assert_eq!(ports_of(&bed, &gone), None);
    assert_eq!(ports_of(&bed, &keep), Some(keep.published.clone()));
}

/// Starts `name` and says which VMM it got and whether the run probes.
fn started_under(bed: &TestBed, name: &str) -> (crate::state::model::VmmKind, bool) {
    let vm = create(bed, name, true).unwrap();
    let Loaded::Found(handles) = handles(bed, &vm) else {
        panic!("no handles for {name}");
    };
    assert_eq!(Some(row(bed, name).vmm), handles.vmm);
    (row(bed, name).vmm, handles.probe)
}

#[test]
fn auto_picks_the_vmm_from_kvm_the_binaries_and_the_finding_for_this_kernel() {
    use crate::state::model::{HostFinding, VmmChoice, VmmKind};
    let bed = TestBed::new().unwrap();
    bed.fake.world().kernel = "6.1.0 #1".into();
    // Nothing known yet: Firecracker, and this run must show console output.
    assert_eq!(started_under(&bed, "a"), (VmmKind::Firecracker, true));
    assert!(
        bed.fake
            .world()
            .calls
            .contains(&"binary firecracker".to_owned())
    );
    // Found unable on this kernel: QEMU, no probe.
    let unable = HostFinding {
        kernel: "6.1.0 #1".into(),
        runs: false,
        found_at: crate::state::model::now(),
        detail: "its guest printed nothing".into(),
    };
    bed.ctx
        .store
        .record_host_finding(VmmKind::Firecracker, &unable)
        .unwrap();
    assert_eq!(started_under(&bed, "b"), (VmmKind::Qemu, false));
    // Another kernel: Firecracker again.
    bed.fake.world().kernel = "6.12.0 #1".into();
    assert_eq!(started_under(&bed, "c"), (VmmKind::Firecracker, true));
    // Seen running on this kernel: Firecracker without a probe.
    let runs = HostFinding {
        kernel: "6.12.0 #1".into(),
        runs: true,
        ..unable
    };
    bed.ctx
        .store
        .record_host_finding(VmmKind::Firecracker, &runs)
        .unwrap();
    assert_eq!(started_under(&bed, "d"), (VmmKind::Firecracker, false));
    // No usable /dev/kvm: QEMU.
    bed.fake.world().kvm_broken = Some("/dev/kvm: No such file or directory".into());
    assert_eq!(started_under(&bed, "e"), (VmmKind::Qemu, false));
    // Neither: refused before anything is made, naming both.
    bed.fake.world().missing_vmms.insert(VmmKind::Qemu);
    let err = create(&bed, "f", true).unwrap_err().to_string();
    assert!(
        err.contains("/dev/kvm") && err.contains("qemu not found"),
        "{err}"
    );
    assert!(bed.ctx.store.find_vm("f").unwrap().is_none());
    // An explicit choice is obeyed: Firecracker without KVM.
    let explicit = ops::create::Spec {
        vmm: Some(VmmChoice::Firecracker),
        ..spec("g")
    };
    let vm = ops::create::create(&bed.ctx, &explicit, true, &mut bed.ctx.timings()).unwrap();
    assert_eq!(vm.vm.vmm, VmmKind::Firecracker);
    assert_eq!(row(&bed, "g").vmm_choice, Some(VmmChoice::Firecracker));
}
