//! banger's QEMU-backed VMM: serves the subset of Firecracker's API that
//! banger uses on a Unix socket and runs the guest under
//! `qemu-system-x86_64 -M microvm` with QEMU's software CPU (TCG), so that a
//! host whose KVM cannot run guests, or that has none, still runs banger's
//! VMs: the same kernel, initrd, drives, TAP, vsock (through
//! `vhost-device-vsock`, which speaks Firecracker's `CONNECT <port>` socket
//! protocol) and Ctrl-Alt-Del on an i8042 keyboard.
//!
//! The API layer ([`api`], [`server`]) is separate from what runs the guest
//! ([`backend`]): [`qemu::Qemu`] is this crate's backend.

pub mod api;
pub mod args;
pub mod backend;
pub mod config;
pub mod http;
pub mod qemu;
mod qmp;
pub mod server;

/// The Firecracker release whose API is served.
pub const FIRECRACKER_API_VERSION: &str = "1.12.1";

/// `[<id>:<program>:<level>]`, the prefix of every line the VMM writes once
/// it serves a VM, in Firecracker's format: whoever reads the console (where
/// banger sends both) tells the VMM's lines from the guest's by it.
static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Writes one line to stderr, prefixed (see [`PREFIX`]); `level` is
/// Firecracker's (`INFO`, `WARN`, `ERROR`).
pub fn log(level: &str, message: &str) {
    let prefix = PREFIX
        .get()
        .map_or("[anonymous-instance:vmm", String::as_str);
    eprintln!("{prefix}:{level}] {message}");
}

/// Sets the prefix of [`log`]'s lines for the VM `id`.
fn set_log_prefix(id: &str, program: &str) {
    // Set once per process, by the server; a second call changes nothing.
    let _ = PREFIX.set(format!("[{id}:{program}"));
}
