//! `banger image commit` with a real guest: what a VM wrote into its root
//! and work disks is in the VMs of the image committed from it, each of
//! which is a machine of its own (machine id, SSH host key); and the VM
//! committed from still boots. Slow (software CPU): two VMs, three boots.

#![allow(clippy::unwrap_used)]

use banger_testkit::context::guest_context;

#[test]
fn a_committed_vm_s_writes_are_in_the_new_image_s_vms() {
    let Some(ctx) = guest_context(&[]) else {
        return;
    };
    ctx.ok(&["vm", "create", "a", "--work-size", "256M"]);
    ctx.ok(&[
        "vm",
        "ssh",
        "a",
        "--",
        "sh",
        "-c",
        "echo root > /etc/committed-mark && echo work > /root/work-mark && sync",
    ]);
    let ssh = |vm: &str, command: &[&str]| {
        let mut args = vec!["vm", "ssh", vm, "--"];
        args.extend(command);
        ctx.ok(&args)
    };
    let a_machine = ssh("a", &["cat", "/etc/machine-id"]);
    let a_key = ssh("a", &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
    assert_eq!(a_machine.trim().len(), 32, "{a_machine:?}");
    ctx.ok(&["vm", "stop", "a", "--timeout", "120s"]);

    ctx.ok(&["image", "commit", "a", "committed", "--with-work"]);
    let shown = ctx.json(&["image", "show", "committed", "--json"]);
    assert_eq!(shown["origin"], "committed from VM a of image base");

    ctx.ok(&["vm", "create", "b", "--image", "committed"]);
    assert_eq!(
        ssh("b", &["cat", "/etc/committed-mark", "/root/work-mark"]),
        "root\nwork\n"
    );
    let b_machine = ssh("b", &["cat", "/etc/machine-id"]);
    assert_eq!(b_machine.trim().len(), 32, "{b_machine:?}");
    assert_ne!(b_machine, a_machine, "b has a's machine id");
    let b_key = ssh("b", &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
    assert_ne!(
        b_key.split_whitespace().nth(1),
        a_key.split_whitespace().nth(1)
    );
    ctx.ok(&["vm", "delete", "b", "--force"]);

    // The VM committed from is as it was.
    ctx.ok(&["vm", "start", "a"]);
    assert_eq!(
        ssh("a", &["cat", "/etc/committed-mark", "/root/work-mark"]),
        "root\nwork\n"
    );
    assert_eq!(ssh("a", &["cat", "/etc/machine-id"]), a_machine);
    ctx.ok(&["vm", "delete", "a", "--force"]);
    ctx.assert_nothing_left("after both VMs are deleted");
}
