//! `handles.json`, as reconcile and teardown load it.

use std::path::{Path, PathBuf};

use banger::state::handles::{Handles, Loaded};
use banger::state::model::{CowStrategy, VmmKind};
use proptest::prelude::*;

use crate::{cases, inputs, replay};

/// The VM id the journals belong to: `Handles::load` takes it from the
/// directory's name and accepts only names banger makes for it.
const ID: &str = "0123456789";

/// A VM directory named [`ID`] in a fresh temp dir.
fn vm_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let vm = dir.path().join(ID);
    std::fs::create_dir(&vm).expect("vm dir");
    (dir, vm)
}

fn load_bytes(dir: &Path, bytes: &[u8]) -> Loaded {
    std::fs::write(Handles::path(dir), bytes).expect("write handles.json");
    Handles::load(dir)
}

#[test]
fn handles_corpus() {
    let (_dir, vm) = vm_dir();
    replay("handles", |bytes| {
        matches!(load_bytes(&vm, bytes), Loaded::Found(_))
    });
}

fn handles() -> impl Strategy<Value = Handles> {
    // Each name is banger's own for the VM, absent, or anything at all.
    let name = |own: &'static str| {
        prop_oneof![
            Just(None),
            Just(Some(own.to_owned())),
            any::<Option<String>>(),
        ]
    };
    let path = |own: &'static str| name(own).prop_map(|p| p.map(PathBuf::from));
    (
        any::<Option<u32>>(),
        name("bg-0123456789"),
        path("/dev/loop3"),
        path("/dev/loop12"),
        name("banger-0123456789"),
        path("/dev/mapper/banger-0123456789"),
        proptest::option::of(proptest::sample::select(vec![
            CowStrategy::DmSnapshot,
            CowStrategy::Reflink,
            CowStrategy::Copy,
        ])),
        any::<(bool, bool)>(),
        (
            proptest::option::of(proptest::sample::select(vec![
                VmmKind::Firecracker,
                VmmKind::Qemu,
            ])),
            any::<(bool, u64, u64)>(),
        ),
    )
        .prop_map(
            |(
                pid,
                tap,
                base_loop,
                cow_loop,
                dm_name,
                dm_dev,
                cow_strategy,
                (nat, ports),
                (vmm, (probe, console_from, vmm_log_from)),
            )| {
                Handles {
                    pid,
                    tap,
                    base_loop,
                    cow_loop,
                    dm_name,
                    dm_dev,
                    cow_strategy,
                    nat,
                    ports,
                    vmm,
                    vmm_exe: pid.map(|pid| banger::state::model::FileId {
                        dev: u64::from(pid),
                        ino: vmm_log_from,
                    }),
                    probe,
                    console_from,
                    vmm_log_from,
                }
            },
        )
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn handles_load_or_report_corrupt(bytes in inputs("handles")) {
        let (_dir, vm) = vm_dir();
        match load_bytes(&vm, &bytes) {
            Loaded::Found(handles) => {
                prop_assert!(bytes.trim_ascii_start().starts_with(b"{"), "only an object is trusted");
                handles.save(&vm).expect("save");
                prop_assert!(matches!(Handles::load(&vm), Loaded::Found(again) if again == handles));
            }
            Loaded::Corrupt(reason) => prop_assert!(!reason.is_empty()),
            Loaded::Missing => prop_assert!(false, "the file was written"),
        }
    }

    #[test]
    fn handles_round_trip(handles in handles()) {
        // What banger writes it reads back; what names another VM's or a
        // host's objects it refuses.
        let (_dir, vm) = vm_dir();
        handles.save(&vm).expect("save");
        let id = banger::state::ids::VmId::parse(ID).expect("id");
        match (handles.check(&id), Handles::load(&vm)) {
            (Ok(()), Loaded::Found(read)) => prop_assert_eq!(read, handles),
            (Err(_), Loaded::Corrupt(why)) => prop_assert!(!why.is_empty()),
            (expected, got) => prop_assert!(false, "check {:?}, load {:?}", expected, got),
        }
    }
}
