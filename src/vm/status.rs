//! A VM's status, computed from its row (the operation under way) and what
//! reconcile observed (a live VMM or not), and what each status allows next.

use serde::Serialize;

use crate::state::model::{Pending, Vm};

/// Where a VM is in its life, finer than the `running`/`stopped` users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    /// Its row exists but its disks are not finished: only delete it.
    Creating,
    Stopped,
    /// A start is under way (or died midway and is not reconciled yet).
    Starting,
    Running,
    /// A stop is under way, or died with the VMM still alive.
    Stopping,
    /// A delete is under way or died midway: only delete it (again).
    Deleting,
    /// Being claimed from a warm pool (renamed, handed over), or its claim
    /// died midway: then `gc` deletes it, as it was never handed over.
    Claiming,
}

/// Why a VM cannot do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "VM {0}'s creation did not finish, so it cannot be started; `banger vm delete {0}` (or `banger gc`) removes it"
    )]
    Unfinished(String),
    #[error("VM {0}'s deletion did not finish; run `banger vm delete {0}` again")]
    BeingDeleted(String),
    #[error("VM {0} is running; stop it first: banger vm stop {0}")]
    Running(String),
    #[error(
        "VM {0}'s creation did not finish, so it has no disks to commit; `banger vm delete {0}` removes it"
    )]
    NoDisks(String),
}

/// What a guard says about an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Go ahead.
    Go,
    /// Nothing to do: the VM already is where the operation would take it.
    AlreadyThere,
}

impl VmStatus {
    /// The status of `vm` given whether a VMM serves it right now.
    pub fn of(vm: &Vm, vmm_alive: bool) -> Self {
        match (vm.pending, vmm_alive) {
            (Some(Pending::Create), _) => Self::Creating,
            (Some(Pending::Delete), _) => Self::Deleting,
            (Some(Pending::Start), _) => Self::Starting,
            (Some(Pending::Claim), _) => Self::Claiming,
            (Some(Pending::Stop), true) => Self::Stopping,
            (Some(Pending::Stop), false) | (None, false) => Self::Stopped,
            (None, true) => Self::Running,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Stopped => "stopped",
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Deleting => "deleting",
            Self::Claiming => "claiming",
        }
    }

    /// Whether `vm start` may start this VM.
    pub fn can_start(self, name: &str) -> Result<Next, Refused> {
        match self {
            Self::Stopped => Ok(Next::Go),
            Self::Running | Self::Starting | Self::Stopping | Self::Claiming => {
                Ok(Next::AlreadyThere)
            }
            Self::Creating => Err(Refused::Unfinished(name.to_owned())),
            Self::Deleting => Err(Refused::BeingDeleted(name.to_owned())),
        }
    }

    /// Whether `vm stop` has a VMM to stop.
    pub fn can_stop(self) -> Next {
        match self {
            Self::Running | Self::Starting | Self::Stopping | Self::Claiming => Next::Go,
            Self::Stopped | Self::Creating | Self::Deleting => Next::AlreadyThere,
        }
    }

    /// Whether `image commit` may read this VM's disks: only while it is
    /// stopped, so they hold still.
    pub fn can_commit(self, name: &str) -> Result<(), Refused> {
        match self {
            Self::Stopped => Ok(()),
            Self::Running | Self::Starting | Self::Stopping | Self::Claiming => {
                Err(Refused::Running(name.to_owned()))
            }
            Self::Creating => Err(Refused::NoDisks(name.to_owned())),
            Self::Deleting => Err(Refused::BeingDeleted(name.to_owned())),
        }
    }

    /// Whether `vm delete` may proceed: always; a running VM is stopped first.
    pub fn can_delete(self) -> Next {
        Next::Go
    }

    /// Why `gc` may delete this VM for being half-made, if it may: a create
    /// that died (never while a VMM runs it), or a claim from a pool that
    /// died before the VM was handed over. (An interrupted delete is left
    /// for `vm delete`, whose message says to run it again.) Only asked of
    /// a VM whose lock gc holds, so no command is midway through it.
    pub fn abandoned(self, vmm_alive: bool) -> Option<&'static str> {
        match self {
            Self::Creating if !vmm_alive => Some("its creation did not finish"),
            Self::Claiming => Some("its claim from a warm pool did not finish"),
            _ => None,
        }
    }

    /// The message shown as `last_error` for an operation found under way.
    pub fn pending_message(self, name: &str) -> Option<String> {
        match self {
            Self::Creating => Some(format!(
                "creation did not finish; `banger vm delete {name}` removes it"
            )),
            Self::Deleting => Some(format!(
                "deletion did not finish; run `banger vm delete {name}` again"
            )),
            Self::Starting => Some(start_interrupted(name)),
            Self::Stopping => Some(format!(
                "stopping VM {name} did not finish; `banger vm stop {name}` finishes it"
            )),
            Self::Claiming => Some(format!(
                "its claim from a warm pool did not finish; `banger gc` (or `banger vm delete {name}`) removes it"
            )),
            Self::Stopped | Self::Running => None,
        }
    }
}

/// What an interrupted start leaves as the VM's last error.
pub fn start_interrupted(name: &str) -> String {
    format!("its start was interrupted; `banger vm start {name}` starts it again")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::model::{VmId, VmName, VmState};

    fn vm(pending: Option<Pending>) -> Vm {
        Vm {
            id: VmId::parse("0123456789").unwrap(),
            name: VmName::parse("a").unwrap(),
            image: "base".into(),
            vcpus: 1,
            memory_mib: 128,
            disk_size: 1,
            work_size: 1,
            ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
            mac: String::new(),
            vsock_cid: 3,
            nat: false,
            published: Vec::new(),
            cow_strategy: None,
            vmm: crate::state::model::VmmKind::Firecracker,
            vmm_choice: None,
            pending,
            desired: VmState::Stopped,
            expires_at: None,
            last_error: None,
            created_at: 0,
        }
    }

    #[test]
    fn status_follows_the_pending_operation_and_the_vmm() {
        use Pending::*;
        let cases = [
            (None, false, VmStatus::Stopped),
            (None, true, VmStatus::Running),
            (Some(Create), false, VmStatus::Creating),
            (Some(Create), true, VmStatus::Creating),
            (Some(Start), false, VmStatus::Starting),
            (Some(Start), true, VmStatus::Starting),
            (Some(Stop), true, VmStatus::Stopping),
            (Some(Stop), false, VmStatus::Stopped),
            (Some(Delete), false, VmStatus::Deleting),
            (Some(Delete), true, VmStatus::Deleting),
            (Some(Claim), true, VmStatus::Claiming),
            (Some(Claim), false, VmStatus::Claiming),
        ];
        for (pending, alive, want) in cases {
            assert_eq!(
                VmStatus::of(&vm(pending), alive),
                want,
                "{pending:?} {alive}"
            );
        }
    }

    #[test]
    fn guards_say_what_may_happen_next() {
        assert_eq!(VmStatus::Stopped.can_start("a"), Ok(Next::Go));
        assert_eq!(VmStatus::Running.can_start("a"), Ok(Next::AlreadyThere));
        let unfinished = VmStatus::Creating.can_start("a").unwrap_err();
        assert!(
            unfinished.to_string().contains("`banger vm delete a`"),
            "{unfinished}"
        );
        assert_eq!(
            VmStatus::Deleting.can_start("a"),
            Err(Refused::BeingDeleted("a".into()))
        );
        assert_eq!(VmStatus::Running.can_stop(), Next::Go);
        assert_eq!(VmStatus::Stopping.can_stop(), Next::Go);
        assert_eq!(VmStatus::Stopped.can_stop(), Next::AlreadyThere);
        for status in [VmStatus::Creating, VmStatus::Running, VmStatus::Deleting] {
            assert_eq!(status.can_delete(), Next::Go);
        }
        assert_eq!(VmStatus::Stopped.can_commit("a"), Ok(()));
        for status in [VmStatus::Running, VmStatus::Starting, VmStatus::Stopping] {
            let refused = status.can_commit("a").unwrap_err();
            assert_eq!(
                refused.to_string(),
                "VM a is running; stop it first: banger vm stop a"
            );
        }
        assert_eq!(
            VmStatus::Creating.can_commit("a"),
            Err(Refused::NoDisks("a".into()))
        );
        assert!(VmStatus::Creating.abandoned(false).is_some());
        assert!(VmStatus::Creating.abandoned(true).is_none());
        assert!(VmStatus::Claiming.abandoned(true).is_some());
        assert!(VmStatus::Stopped.abandoned(false).is_none());
        assert!(VmStatus::Running.abandoned(true).is_none());
        assert!(VmStatus::Deleting.abandoned(false).is_none());
    }

    #[test]
    fn only_operations_under_way_carry_a_message() {
        assert_eq!(VmStatus::Running.pending_message("a"), None);
        assert_eq!(VmStatus::Stopped.pending_message("a"), None);
        let stopping = VmStatus::Stopping.pending_message("a").unwrap();
        assert!(stopping.contains("`banger vm stop a`"), "{stopping}");
    }
}
