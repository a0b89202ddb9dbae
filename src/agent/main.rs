//! `banger-agent`: runs inside the guest and answers banger over vsock.

fn main() {}
