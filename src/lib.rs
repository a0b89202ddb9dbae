//! banger: Firecracker microVMs for developers, without a daemon.
//!
//! `main.rs` parses the command line and calls into `commands`; `commands`
//! orchestrate `state` (what banger knows) and `host` (what it does to the
//! machine). `host` and `state` never print and never parse CLI arguments.

pub mod agent_protocol;
pub mod cli;
pub mod commands;
pub mod fault;
pub mod host;
pub mod lifecycle;
pub mod sidecar;
pub mod state;
