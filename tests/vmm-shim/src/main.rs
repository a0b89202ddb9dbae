//! Test-only VMM: Firecracker API subset, guest under QEMU.

fn main() {}
