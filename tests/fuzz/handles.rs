//! `handles.json`, as reconcile and teardown load it.

use std::path::{Path, PathBuf};

use banger::state::handles::{Handles, Loaded};
use banger::state::model::{CowStrategy, VmmKind};
use proptest::prelude::*;

use crate::{cases, inputs, replay};

fn load_bytes(dir: &Path, bytes: &[u8]) -> Loaded {
    std::fs::write(Handles::path(dir), bytes).expect("write handles.json");
    Handles::load(dir)
}

#[test]
fn handles_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    replay("handles", |bytes| {
        matches!(load_bytes(dir.path(), bytes), Loaded::Found(_))
    });
}

fn handles() -> impl Strategy<Value = Handles> {
    let path = || any::<Option<String>>().prop_map(|p| p.map(PathBuf::from));
    (
        any::<Option<u32>>(),
        any::<Option<String>>(),
        path(),
        path(),
        any::<Option<String>>(),
        path(),
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
        let dir = tempfile::tempdir().expect("tempdir");
        match load_bytes(dir.path(), &bytes) {
            Loaded::Found(handles) => {
                prop_assert!(bytes.trim_ascii_start().starts_with(b"{"), "only an object is trusted");
                handles.save(dir.path()).expect("save");
                prop_assert!(matches!(Handles::load(dir.path()), Loaded::Found(again) if again == handles));
            }
            Loaded::Corrupt(reason) => prop_assert!(!reason.is_empty()),
            Loaded::Missing => prop_assert!(false, "the file was written"),
        }
    }

    #[test]
    fn handles_round_trip(handles in handles()) {
        let dir = tempfile::tempdir().expect("tempdir");
        handles.save(dir.path()).expect("save");
        prop_assert!(matches!(Handles::load(dir.path()), Loaded::Found(read) if read == handles));
    }
}
