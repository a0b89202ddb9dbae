//! Every side effect banger has on the host, one module per subsystem.

pub mod deadline;
pub mod disk;
pub mod dns;
pub mod firecracker;
pub mod image;
pub mod kvm;
pub mod net;
pub mod procs;
pub mod qemu;
pub mod run;
pub mod ssh;
pub mod vsock;
