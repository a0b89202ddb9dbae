//! Which VMM starts a VM: Firecracker where it can run guests, else
//! `banger-vmm-qemu` (QEMU's software CPU). `auto` decides at each start
//! from `/dev/kvm`, the binaries present and what banger found out about
//! this host kernel ([`HostFinding`]); an explicit choice is obeyed.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, anyhow};

use super::Ctx;
use crate::state::model::{HostFinding, VmmChoice, VmmKind, now};
use crate::state::parse::format_duration;

/// How long a guest under Firecracker may print nothing on its console
/// before banger decides this host cannot run guests under it: a working
/// KVM prints the kernel's banner in well under a second.
pub const PROBE_BOUND: Duration = Duration::from_secs(10);

/// The VMM one start uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub kind: VmmKind,
    pub binary: PathBuf,
    /// Under `auto`, why it is QEMU (said on every start).
    pub fallback: Option<String>,
    /// Whether this start must show console output within
    /// [`PROBE_BOUND`] (Firecracker, not yet seen to run guests on this
    /// kernel).
    pub probe: bool,
}

/// What the choice depends on, gathered from the host and the store.
#[derive(Debug, Clone)]
pub struct Facts {
    pub kvm: Result<(), String>,
    pub firecracker: Result<PathBuf, String>,
    pub qemu: Result<PathBuf, String>,
    /// The finding about Firecracker, if it was made on the running kernel.
    pub finding: Option<HostFinding>,
}

impl Facts {
    /// The facts for `choice` (binaries it cannot pick are not looked up).
    pub fn gather(ctx: &Ctx, choice: VmmChoice) -> Result<Self> {
        let kernel = ctx.host.vmm.host_kernel();
        let finding = ctx
            .store
            .host_finding(VmmKind::Firecracker)?
            .filter(|f| f.kernel == kernel);
        let binary = |kind| ctx.host.vmm.binary(kind).map_err(|e| format!("{e:#}"));
        let unused = || Err("not looked up".to_owned());
        Ok(Self {
            kvm: match choice {
                VmmChoice::Auto => ctx.host.vmm.kvm_usable(),
                _ => Ok(()),
            },
            firecracker: match choice {
                VmmChoice::Qemu => unused(),
                _ => binary(VmmKind::Firecracker),
            },
            qemu: match choice {
                VmmChoice::Firecracker => unused(),
                _ => binary(VmmKind::Qemu),
            },
            finding,
        })
    }
}

/// Picks the VMM for `choice` from `facts`; an error says what is missing.
pub fn decide(choice: VmmChoice, facts: Facts) -> Result<Pick> {
    let probe = !facts.finding.as_ref().is_some_and(|f| f.runs);
    match choice {
        VmmChoice::Firecracker => Ok(Pick {
            kind: VmmKind::Firecracker,
            binary: facts.firecracker.map_err(|e| anyhow!(e))?,
            fallback: None,
            probe,
        }),
        VmmChoice::Qemu => Ok(Pick {
            kind: VmmKind::Qemu,
            binary: facts.qemu.map_err(|e| anyhow!(e))?,
            fallback: None,
            probe: false,
        }),
        VmmChoice::Auto => {
            let why_not = match (&facts.kvm, &facts.firecracker, &facts.finding) {
                (Err(kvm), _, _) => Some(kvm.clone()),
                // "Firecracker not found", without where it looked (doctor says).
                (Ok(()), Err(missing), _) => Some(format!(
                    "{} (`banger doctor` says where banger looked)",
                    missing.split(':').next().unwrap_or(missing)
                )),
                (Ok(()), Ok(_), Some(finding)) if !finding.runs => Some(cannot_run(finding)),
                _ => None,
            };
            match (why_not, facts.firecracker) {
                (None, Ok(binary)) => Ok(Pick {
                    kind: VmmKind::Firecracker,
                    binary,
                    fallback: None,
                    probe,
                }),
                (why, _) => {
                    let why = why.unwrap_or_default();
                    let binary = facts.qemu.map_err(|qemu| {
                        anyhow!("no VMM can start this VM: Firecracker cannot ({why}), and {qemu}")
                    })?;
                    Ok(Pick {
                        kind: VmmKind::Qemu,
                        binary,
                        fallback: Some(why),
                        probe: false,
                    })
                }
            }
        }
    }
}

/// The VMM a start of a VM with `choice` (`None`: the config's) uses.
pub fn pick(ctx: &Ctx, choice: Option<VmmChoice>) -> Result<Pick> {
    let choice = choice.unwrap_or(ctx.config.vmm);
    decide(choice, Facts::gather(ctx, choice)?)
}

/// "Firecracker could not run a guest on this host (…), found 3h ago".
pub fn cannot_run(finding: &HostFinding) -> String {
    let ago = Duration::from_secs(u64::try_from(now() - finding.found_at).unwrap_or(0));
    format!(
        "Firecracker could not run a guest on this host ({}), found {} ago on this kernel; \
         `banger doctor --boot` checks again",
        finding.detail,
        format_duration(ago)
    )
}

/// Records what a start under Firecracker showed on this host kernel.
pub fn record(ctx: &Ctx, runs: bool, detail: &str) -> Result<()> {
    let finding = HostFinding {
        kernel: ctx.host.vmm.host_kernel(),
        runs,
        found_at: now(),
        detail: detail.to_owned(),
    };
    Ok(ctx
        .store
        .record_host_finding(VmmKind::Firecracker, &finding)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            kvm: Ok(()),
            firecracker: Ok("/usr/bin/firecracker".into()),
            qemu: Ok("/usr/bin/banger-vmm-qemu".into()),
            finding: None,
        }
    }

    fn finding(runs: bool) -> Option<HostFinding> {
        Some(HostFinding {
            kernel: "6.1".into(),
            runs,
            found_at: now(),
            detail: "no console output within 10s".into(),
        })
    }

    #[test]
    fn auto_takes_firecracker_and_probes_until_it_has_seen_a_guest() {
        let pick = decide(VmmChoice::Auto, facts()).unwrap();
        assert_eq!(
            (pick.kind, pick.probe, pick.fallback),
            (VmmKind::Firecracker, true, None)
        );
        let seen = Facts {
            finding: finding(true),
            ..facts()
        };
        let pick = decide(VmmChoice::Auto, seen).unwrap();
        assert_eq!((pick.kind, pick.probe), (VmmKind::Firecracker, false));
    }

    #[test]
    fn auto_falls_back_to_qemu_and_says_why() {
        for (facts, why) in [
            (
                Facts {
                    kvm: Err("/dev/kvm: No such file or directory".into()),
                    ..facts()
                },
                "/dev/kvm: No such file",
            ),
            (
                Facts {
                    firecracker: Err("Firecracker not found: no config path, PATH (/bin)".into()),
                    ..facts()
                },
                "Firecracker not found (`banger doctor` says where banger looked)",
            ),
            (
                Facts {
                    finding: finding(false),
                    ..facts()
                },
                "Firecracker could not run a guest on this host (no console output within 10s)",
            ),
        ] {
            let pick = decide(VmmChoice::Auto, facts).unwrap();
            assert_eq!((pick.kind, pick.probe), (VmmKind::Qemu, false));
            let said = pick.fallback.unwrap();
            assert!(said.contains(why), "{said}");
        }
    }

    #[test]
    fn auto_without_either_vmm_names_both_problems() {
        let none = Facts {
            kvm: Err("/dev/kvm: Permission denied".into()),
            qemu: Err("banger-vmm-qemu not found".into()),
            ..facts()
        };
        let err = decide(VmmChoice::Auto, none).unwrap_err().to_string();
        assert!(
            err.contains("Permission denied") && err.contains("banger-vmm-qemu not found"),
            "{err}"
        );
    }

    #[test]
    fn an_explicit_choice_is_obeyed_whatever_was_found() {
        let found_unable = Facts {
            finding: finding(false),
            ..facts()
        };
        let pick = decide(VmmChoice::Firecracker, found_unable).unwrap();
        assert_eq!((pick.kind, pick.probe), (VmmKind::Firecracker, true));
        let no_kvm = Facts {
            kvm: Err("none".into()),
            ..facts()
        };
        let pick = decide(VmmChoice::Qemu, no_kvm).unwrap();
        assert_eq!((pick.kind, pick.fallback), (VmmKind::Qemu, None));
        let missing = Facts {
            firecracker: Err("Firecracker not found: …".into()),
            ..facts()
        };
        let err = decide(VmmChoice::Firecracker, missing).unwrap_err();
        assert!(err.to_string().starts_with("Firecracker not found"));
    }
}
