//! banger: Firecracker microVMs for developers, without a daemon.
//!
//! `main.rs` parses the command line and calls into `commands`, which
//! resolve their input, call `ops` (the shared flows) or a method of the
//! locked VM type in `vm`, and print. `vm` reaches the machine only through
//! the narrow traits of `vm::host`, implemented over `host` (every side
//! effect); `state` is what banger knows. `host` and `state` never print and
//! never parse CLI arguments.

pub mod agent_protocol;
pub mod cli;
pub mod commands;
pub mod env;
pub mod fault;
pub mod host;
pub mod ops;
pub mod sidecar;
pub mod state;
pub mod vm;
