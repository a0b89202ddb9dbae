//! The VM as a type. [`LockedVm`] is the only way to change a VM: opening it
//! takes the VM's lock, re-reads its row and reconciles it with the host;
//! its methods are the lifecycle (prepare disks, start, stop, delete, and
//! reading a stopped VM's disks out for `image commit`), each
//! guarded by the [`VmStatus`] it computes. [`VmRead`] is the read-only view
//! for `ls`, `show`, `ssh` and `logs`. The host is reached only through the
//! narrow traits of [`host`], so the lifecycle is unit-tested against
//! [`fake`]; the runtime resources a VM holds are the list in [`resources`].

pub mod ctx;
pub mod export;
#[cfg(test)]
pub mod fake;
pub mod files;
pub mod host;
pub mod locked;
pub mod resources;
pub mod status;
#[cfg(test)]
mod tests;
pub mod timings;
pub mod vmm_choice;

pub use ctx::Ctx;
pub use files::{ImageFiles, VmFiles};
pub use locked::{LockedVm, Observed, VmRead};
pub use status::VmStatus;
pub use timings::Timings;
