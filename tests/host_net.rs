//! Host networking against the real kernel: bridge, TAPs and the TAP pool,
//! nftables NAT, and masquerading seen from outside. Each test runs in its
//! own network namespace; skipped (with a message) when not root.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use banger::host::net::NetError;
use banger::host::net::bridge::{delete_link, ensure_bridge, link_exists, list_links};
use banger::host::net::nat::{
    Fence, add_vm_rules, ensure_host_fence, fenced_bridges, remove_vm_rules, vms_with_rules,
};
use banger::host::net::tap::{
    claim_pool_tap, create_tap, drain_pool, fill_pool, owned_links, owner_of, return_to_pool,
};
use banger_testkit::netns::{NamedNetns, in_new_netns, link_json};
use banger_testkit::{Need, eventually, require, run, run_with_stdin};
use serde_json::Value;

const BRIDGE: &str = "bgtest0";
/// The mark of the TAPs these tests make (as a home's `banger:<tag>`).
const OWNER: &str = "banger:0000beef";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// The test bridge's fence, DNS on its gateway.
fn fence(bridge: &str) -> Fence {
    Fence {
        bridge: bridge.into(),
        dns: std::net::SocketAddrV4::new(GATEWAY, 53),
    }
}

fn flags(link: &Value) -> Vec<String> {
    link["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| f.as_str().expect("flag").to_string())
        .collect()
}

fn ipv4_addresses(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().expect("local"), a["prefixlen"]))
        .collect()
}

#[test]
fn bridge_is_created_once_with_its_gateway_and_up() {
    require!("host", Need::Root);
    in_new_netns(|| {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").expect("reset ip_forward");
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("create bridge");
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("ensure again");

        let link = link_json(BRIDGE);
        assert_eq!(link["linkinfo"]["info_kind"], "bridge");
        assert!(flags(&link).contains(&"UP".to_string()), "{link}");
        assert_eq!(ipv4_addresses(&link), vec!["10.77.0.1/24"]);
        let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read");
        assert_eq!(forwarding.trim(), "1");

        assert!(link_exists(BRIDGE).expect("query"));
        assert_eq!(
            list_links("bgtest").expect("list"),
            vec![BRIDGE.to_string()]
        );
        delete_link(BRIDGE).expect("delete");
        assert!(!link_exists(BRIDGE).expect("query"));
        delete_link(BRIDGE).expect("deleting an absent link is fine");
    });
}

#[test]
fn ensure_bridge_refuses_a_link_that_is_not_a_bridge() {
    require!("host", Need::Root);
    in_new_netns(|| {
        run(
            "ip",
            &[
                "link", "add", "bgdummy", "type", "veth", "peer", "name", "bgdummy1",
            ],
        );
        let err = ensure_bridge("bgdummy", GATEWAY, 24).expect_err("not a bridge");
        assert!(matches!(err, NetError::NotABridge { .. }), "{err}");
        assert!(err.to_string().contains("bgdummy"), "{err}");
    });
}

mod tun {
    nix::ioctl_readwrite_bad!(tunsetiff, libc::TUNSETIFF, libc::ifreq);
}

/// Opens TAP `name` the way Firecracker does; returns the errno on failure.
fn open_like_firecracker(name: &str) -> Result<std::fs::File, nix::Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // SAFETY: all-zero bytes are a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: file is an open /dev/net/tun, req a valid ifreq outliving the call.
    unsafe { tun::tunsetiff(file.as_raw_fd(), &mut req) }?;
    Ok(file)
}

#[test]
fn tap_is_persistent_attached_up_and_openable_by_firecracker() {
    require!("host", Need::Root);
    in_new_netns(|| {
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("bridge");
        create_tap("bgtap0", BRIDGE, OWNER).expect("create tap");

        let link = link_json("bgtap0");
        assert_eq!(link["master"], BRIDGE, "{link}");
        assert!(flags(&link).contains(&"UP".to_string()), "{link}");
        let info = &link["linkinfo"]["info_data"];
        assert_eq!(link["linkinfo"]["info_kind"], "tun", "{link}");
        assert_eq!(info["type"], "tap", "{link}");
        assert_eq!(info["pi"], false, "{link}");
        assert_eq!(info["vnet_hdr"], true, "{link}");
        assert_eq!(info["persist"], true, "{link}");

        let opened = open_like_firecracker("bgtap0").expect("Firecracker-style open");
        drop(opened);
        assert!(
            link_exists("bgtap0").expect("query"),
            "persistent TAP outlives its fd"
        );

        let err = create_tap("bgtap0", BRIDGE, OWNER).expect_err("name taken");
        assert!(matches!(err, NetError::LinkExists { .. }), "{err}");
        let err = create_tap("bgtap1", "bgnobridge", OWNER).expect_err("no bridge");
        assert!(matches!(err, NetError::LinkNotFound { .. }), "{err}");
        assert!(
            !link_exists("bgtap1").expect("query"),
            "nothing left behind"
        );
    });
}

#[test]
fn names_longer_than_ifnamsiz_are_rejected_before_any_change() {
    // No privileges needed: validation happens first.
    let err = create_tap("bg-0123456789abc", BRIDGE, OWNER).expect_err("too long");
    assert!(err.to_string().contains("15 bytes"), "{err}");
    let err = claim_pool_tap("bgpool", "bg-0123456789abc", OWNER).expect_err("too long");
    assert!(matches!(err, NetError::InvalidName { .. }), "{err}");
    let err = ensure_bridge("banger-bridge-00", GATEWAY, 24).expect_err("too long");
    assert!(matches!(err, NetError::InvalidName { .. }), "{err}");
}

#[test]
fn pool_fills_claims_exclusively_and_takes_taps_back() {
    require!("host", Need::Root);
    in_new_netns(|| {
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("bridge");
        assert_eq!(fill_pool("bgp", BRIDGE, 4, OWNER).expect("fill"), 4);
        assert_eq!(fill_pool("bgp", BRIDGE, 4, OWNER).expect("refill"), 0);
        assert_eq!(
            list_links("bgp").expect("list"),
            ["bgp0", "bgp1", "bgp2", "bgp3"]
        );
        assert_eq!(link_json("bgp2")["master"], BRIDGE);

        // Six claimers race for four TAPs.
        let start = Arc::new(Barrier::new(6));
        let claimers: Vec<_> = (0..6)
            .map(|i| {
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    let name = format!("bgvm{i}");
                    claim_pool_tap("bgp", &name, OWNER)
                        .expect("claim")
                        .then_some(name)
                })
            })
            .collect();
        let mut winners: Vec<String> = claimers
            .into_iter()
            .filter_map(|c| c.join().expect("claimer"))
            .collect();
        winners.sort();
        assert_eq!(winners.len(), 4, "{winners:?}");
        assert!(list_links("bgp").expect("list").is_empty());
        assert_eq!(list_links("bgvm").expect("list"), winners);
        for name in &winners {
            let link = link_json(name);
            assert_eq!(link["master"], BRIDGE, "{link}");
            assert!(flags(&link).contains(&"UP".to_string()), "{link}");
        }
        assert!(
            !claim_pool_tap("bgp", "bgvm9", OWNER).expect("claim"),
            "pool is empty"
        );

        assert!(return_to_pool(&winners[0], "bgp", 2, OWNER).expect("return"));
        assert!(return_to_pool(&winners[1], "bgp", 2, OWNER).expect("return"));
        assert!(!return_to_pool(&winners[2], "bgp", 2, OWNER).expect("pool full: deleted"));
        assert!(!return_to_pool("bgvm-gone", "bgp", 2, OWNER).expect("absent TAP"));
        assert_eq!(list_links("bgp").expect("list"), ["bgp0", "bgp1"]);
        assert_eq!(list_links("bgvm").expect("list"), [winners[3].clone()]);
        let returned = link_json("bgp1");
        assert_eq!(returned["master"], BRIDGE, "{returned}");
        assert!(flags(&returned).contains(&"UP".to_string()), "{returned}");

        assert_eq!(drain_pool("bgp", OWNER).expect("drain"), 2);
        assert!(list_links("bgp").expect("list").is_empty());
    });
}

#[test]
fn another_homes_taps_are_neither_claimed_nor_drained_nor_listed() {
    require!("host", Need::Root);
    in_new_netns(|| {
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("bridge");
        let theirs = "banger:0000cafe";
        assert_eq!(fill_pool("bgp", BRIDGE, 2, theirs).expect("their pool"), 2);
        create_tap("bg-aaaaaaaaaa", BRIDGE, theirs).expect("their VM's TAP");
        // Ours fills beside theirs, in free slots.
        assert_eq!(fill_pool("bgp", BRIDGE, 2, OWNER).expect("our pool"), 2);
        assert_eq!(
            list_links("bgp").expect("list"),
            ["bgp0", "bgp1", "bgp2", "bgp3"]
        );
        assert_eq!(owner_of("bgp0").expect("owner").as_deref(), Some(theirs));
        assert_eq!(owner_of("bgp2").expect("owner").as_deref(), Some(OWNER));
        assert_eq!(
            owned_links("bgp", OWNER).expect("ours"),
            ["bgp2", "bgp3"],
            "their TAPs are not listed as ours"
        );
        // A TAP nobody marked (made before TAPs were marked) counts as ours.
        run("ip", &["tuntap", "add", "bg-bbbbbbbbbb", "mode", "tap"]);
        assert_eq!(owned_links("bg-", OWNER).expect("ours"), ["bg-bbbbbbbbbb"]);
        assert!(claim_pool_tap("bgp", "bgvm0", OWNER).expect("claim"));
        assert!(claim_pool_tap("bgp", "bgvm1", OWNER).expect("claim"));
        assert!(
            !claim_pool_tap("bgp", "bgvm2", OWNER).expect("claim"),
            "their pool TAPs are not ours to claim"
        );
        assert_eq!(owner_of("bgvm0").expect("owner").as_deref(), Some(OWNER));
        assert!(return_to_pool("bgvm0", "bgp", 2, OWNER).expect("return"));
        assert_eq!(drain_pool("bgp", OWNER).expect("drain"), 1);
        assert_eq!(list_links("bgp").expect("list"), ["bgp0", "bgp1"]);
        assert_eq!(
            list_links("bg-").expect("list"),
            ["bg-aaaaaaaaaa", "bg-bbbbbbbbbb"]
        );
    });
}

fn banger_rules() -> Vec<(String, String)> {
    let out = run("nft", &["-j", "list", "table", "inet", "banger"]);
    let doc: Value = serde_json::from_str(&out).expect("nft json");
    doc["nftables"]
        .as_array()
        .expect("objects")
        .iter()
        .filter_map(|o| o.get("rule"))
        .map(|r| {
            (
                r["chain"].as_str().expect("chain").to_string(),
                r["comment"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn nat_rules_come_and_go_per_vm_and_leave_other_tables_alone() {
    require!("host", Need::Root);
    in_new_netns(|| {
        remove_vm_rules("vm-a").expect("no table yet is fine");
        assert!(vms_with_rules().expect("no table").is_empty());
        run_with_stdin(
            "nft",
            &["-f", "-"],
            "table ip foreign {\n chain passthrough { type filter hook forward priority 0; policy accept; \
             ip saddr 192.0.2.0/24 accept comment \"banger:vm-a\"; }\n}\n",
        );
        let foreign_before = run("nft", &["-j", "list", "table", "ip", "foreign"]);

        add_vm_rules("vm-a", Ipv4Addr::new(10, 77, 0, 2), &fence(BRIDGE)).expect("add vm-a");
        add_vm_rules("vm-b", Ipv4Addr::new(10, 77, 0, 3), &fence(BRIDGE)).expect("add vm-b");
        add_vm_rules("vm-a", Ipv4Addr::new(10, 77, 0, 2), &fence(BRIDGE)).expect("re-add vm-a");

        let rules = banger_rules();
        let count = |chain: &str, vm: &str| {
            rules
                .iter()
                .filter(|(c, comment)| c == chain && comment == &format!("banger:{vm}"))
                .count()
        };
        let fenced = |(_, comment): &&(String, String)| comment == "banger fence:bgtest0";
        let fence = rules.iter().filter(fenced).count();
        assert_eq!(fence, 9, "the host fence is set once: {rules:?}");
        assert_eq!(rules.len(), 6 + fence, "{rules:?}");
        for vm in ["vm-a", "vm-b"] {
            assert_eq!(count("postrouting", vm), 1, "{rules:?}");
            assert_eq!(count("forward", vm), 2, "{rules:?}");
        }
        let listing = run("nft", &["list", "table", "inet", "banger"]);
        assert!(
            listing.contains("ip saddr 10.77.0.2 oifname != \"bgtest0\" masquerade"),
            "{listing}"
        );
        assert!(
            listing.contains("ct state { established, related } accept")
                || listing.contains("ct state established,related accept"),
            "{listing}"
        );
        assert_eq!(vms_with_rules().expect("list"), ["vm-a", "vm-b"]);

        remove_vm_rules("vm-a").expect("remove vm-a");
        remove_vm_rules("vm-a").expect("remove vm-a again");
        let is_fence = |comment: &str| comment == "banger fence:bgtest0";
        assert!(
            banger_rules()
                .iter()
                .all(|(_, comment)| comment == "banger:vm-b" || is_fence(comment))
        );
        assert_eq!(vms_with_rules().expect("list"), ["vm-b"]);
        remove_vm_rules("vm-b").expect("remove vm-b");
        assert!(banger_rules().iter().all(|(_, comment)| is_fence(comment)));
        assert!(vms_with_rules().expect("list").is_empty());

        let foreign_after = run("nft", &["-j", "list", "table", "ip", "foreign"]);
        assert_eq!(foreign_before, foreign_after);
    });
}

/// Accepts one connection and replies with the address it came from.
fn peer_echo_server(listener: TcpListener) -> SocketAddr {
    let (mut stream, peer) = listener.accept().expect("accept");
    stream
        .write_all(peer.ip().to_string().as_bytes())
        .expect("reply");
    peer
}

fn connect_and_read(target: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn masquerade_lets_a_guest_reach_the_outside_as_the_host() {
    require!("host", Need::Root);
    in_new_netns(|| {
        let guest = NamedNetns::new("guest");
        let outside = NamedNetns::new("outside");
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("bridge");
        // Guest: a veth whose host end is a bridge port, like a TAP.
        run(
            "ip",
            &[
                "link", "add", "bgvh", "type", "veth", "peer", "name", "bgvg",
            ],
        );
        run("ip", &["link", "set", "bgvh", "master", BRIDGE, "up"]);
        run("ip", &["link", "set", "bgvg", "netns", &guest.name]);
        guest.exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", "bgvg"]);
        guest.exec(&["ip", "link", "set", "bgvg", "up"]);
        guest.exec(&["ip", "route", "add", "default", "via", "10.77.0.1"]);
        // Outside: another network, reached by the host as 192.0.2.1, with
        // no route back to the guest subnet.
        run(
            "ip",
            &[
                "link", "add", "bgoh", "type", "veth", "peer", "name", "bgoo",
            ],
        );
        run("ip", &["addr", "add", "192.0.2.1/24", "dev", "bgoh"]);
        run("ip", &["link", "set", "bgoh", "up"]);
        run("ip", &["link", "set", "bgoo", "netns", &outside.name]);
        outside.exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "bgoo"]);
        outside.exec(&["ip", "link", "set", "bgoo", "up"]);

        let server_addr: SocketAddr = "192.0.2.2:7777".parse().expect("addr");
        let server = outside.spawn(move || {
            let listener = TcpListener::bind(server_addr).expect("bind in outside");
            peer_echo_server(listener)
        });

        let without_nat = guest
            .spawn(move || connect_and_read(server_addr))
            .join()
            .expect("guest thread");
        assert!(
            without_nat.is_err(),
            "no NAT yet, no way back: {without_nat:?}"
        );

        add_vm_rules("vm-guest", Ipv4Addr::new(10, 77, 0, 2), &fence(BRIDGE)).expect("nat");
        let reply = guest
            .spawn(move || connect_and_read(server_addr))
            .join()
            .expect("guest thread")
            .expect("guest reaches the outside through NAT");
        assert_eq!(
            reply, "192.0.2.1",
            "the outside sees the host, not the guest"
        );
        let seen = server.join().expect("server");
        assert_eq!(seen.ip().to_string(), "192.0.2.1");
        remove_vm_rules("vm-guest").expect("remove");
    });
}

/// A VM directory with one VM, `web`, that the test starts and stops.
struct OneVm {
    running: std::sync::atomic::AtomicBool,
}

impl banger::host::dns::NameLookup for OneVm {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        let running = self.running.load(std::sync::atomic::Ordering::SeqCst);
        (running && name == "web").then_some(Ipv4Addr::new(10, 78, 0, 5))
    }
}

impl banger::sidecar::VmDirectory for OneVm {
    fn any_running(&self) -> bool {
        self.running.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn sidecar_serves_dns_keeps_the_pool_and_exits_when_idle() {
    use banger::sidecar::{SidecarOptions, is_alive, run as run_sidecar};
    require!("host", Need::Root);
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = SidecarOptions {
        lock_path: dir.path().join("run/sidecar.lock"),
        bridge: "bgside0".into(),
        gateway: Ipv4Addr::new(10, 78, 0, 1),
        prefix_len: 24,
        domain: "vm".into(),
        dns_port: 53,
        pool_prefix: "bgsp".into(),
        tap_owner: OWNER.into(),
        pool_size: 2,
        grace: Duration::from_secs(1),
    };
    in_new_netns(move || {
        let vms = Arc::new(OneVm {
            running: true.into(),
        });
        let sidecar = {
            let (opts, vms) = (opts.clone(), vms.clone());
            thread::spawn(move || run_sidecar(&opts, vms))
        };
        assert!(
            eventually(Duration::from_secs(10), || {
                list_links("bgsp").expect("list").len() == 2
            }),
            "the pool never filled"
        );
        assert!(is_alive(&opts.lock_path));
        assert_eq!(link_json("bgsp0")["master"], "bgside0");

        let answer = run(
            "dig",
            &["@10.78.0.1", "+short", "+time=2", "+tries=2", "web.vm", "A"],
        );
        assert_eq!(answer.trim(), "10.78.0.5");

        let started = std::time::Instant::now();
        run_sidecar(&opts, vms.clone()).expect("a second sidecar exits quietly");
        assert!(started.elapsed() < Duration::from_secs(1));

        vms.running
            .store(false, std::sync::atomic::Ordering::SeqCst);
        sidecar
            .join()
            .expect("sidecar thread")
            .expect("sidecar exits cleanly");
        assert!(!is_alive(&opts.lock_path));
        assert!(
            list_links("bgsp").expect("list").is_empty(),
            "pool TAPs deleted"
        );
        assert!(link_exists("bgside0").expect("query"), "the bridge stays");
    });
}

/// Kills and reaps the child on drop.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn firecracker_attaches_to_a_created_tap() {
    let firecracker = banger_testkit::firecracker();
    require!("firecracker", Need::Root, Need::File(&firecracker));
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("api.sock");
    in_new_netns(move || {
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("bridge");
        create_tap("bgfc0", BRIDGE, OWNER).expect("tap");
        assert!(flags(&link_json("bgfc0")).contains(&"NO-CARRIER".to_string()));

        let _vmm = KillOnDrop(
            std::process::Command::new(firecracker)
                .arg("--api-sock")
                .arg(&socket)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn firecracker"),
        );
        assert!(
            eventually(Duration::from_secs(5), || socket.exists()),
            "the API socket never appeared"
        );
        let (status, _) = banger_testkit::api::request(
            &socket,
            "PUT",
            "/network-interfaces/eth0",
            r#"{"iface_id":"eth0","host_dev_name":"bgfc0","guest_mac":"06:00:0a:4d:00:02"}"#,
        );
        assert_eq!(status, 204);
        let link = link_json("bgfc0");
        assert!(
            flags(&link).contains(&"LOWER_UP".to_string()),
            "Firecracker holds it: {link}"
        );
        assert_eq!(link["master"], BRIDGE, "{link}");
    });
}

#[test]
fn a_guest_without_nat_is_not_forwarded_even_where_a_route_back_exists() {
    require!("host", Need::Root);
    in_new_netns(|| {
        let guest = NamedNetns::new("guest");
        let outside = NamedNetns::new("outside");
        ensure_bridge(BRIDGE, GATEWAY, 24).expect("bridge");
        run(
            "ip",
            &[
                "link", "add", "bgvh", "type", "veth", "peer", "name", "bgvg",
            ],
        );
        run("ip", &["link", "set", "bgvh", "master", BRIDGE, "up"]);
        run("ip", &["link", "set", "bgvg", "netns", &guest.name]);
        guest.exec(&["ip", "addr", "add", "10.77.0.2/24", "dev", "bgvg"]);
        guest.exec(&["ip", "link", "set", "bgvg", "up"]);
        guest.exec(&["ip", "route", "add", "default", "via", "10.77.0.1"]);
        // A network behind the host that routes the guest subnet back to
        // it: reachable by plain forwarding, without NAT.
        run(
            "ip",
            &[
                "link", "add", "bgoh", "type", "veth", "peer", "name", "bgoo",
            ],
        );
        run("ip", &["addr", "add", "192.0.2.1/24", "dev", "bgoh"]);
        run("ip", &["link", "set", "bgoh", "up"]);
        run("ip", &["link", "set", "bgoo", "netns", &outside.name]);
        outside.exec(&["ip", "addr", "add", "192.0.2.2/24", "dev", "bgoo"]);
        outside.exec(&["ip", "link", "set", "bgoo", "up"]);
        outside.exec(&["ip", "route", "add", "10.77.0.0/24", "via", "192.0.2.1"]);
        let reach = |port: u16| {
            let server_addr: SocketAddr = format!("192.0.2.2:{port}").parse().expect("addr");
            let listener = outside
                .spawn(move || TcpListener::bind(server_addr).expect("bind in outside"))
                .join()
                .expect("listener");
            let server = thread::spawn(move || {
                listener.set_nonblocking(false).expect("blocking");
                peer_echo_server(listener)
            });
            let reply = guest
                .spawn(move || connect_and_read(server_addr))
                .join()
                .expect("guest thread");
            if reply.is_ok() {
                server.join().expect("server");
            }
            reply
        };

        // The route back works: without banger's rules, the host forwards.
        assert_eq!(reach(7001).expect("plain forwarding"), "10.77.0.2");
        ensure_host_fence(&fence(BRIDGE)).expect("fence");
        assert!(reach(7002).is_err(), "a guest without NAT was forwarded");
        let listing = run("nft", &["list", "chain", "inet", "banger", "forward"]);
        assert!(listing.contains("iifname \"bgtest0\" drop"), "{listing}");
        assert!(listing.contains("oifname \"bgtest0\" drop"), "{listing}");

        // NAT is what lets it out, as the host.
        add_vm_rules("vm-guest", Ipv4Addr::new(10, 77, 0, 2), &fence(BRIDGE)).expect("nat");
        assert_eq!(reach(7003).expect("through NAT"), "192.0.2.1");
        remove_vm_rules("vm-guest").expect("remove");
        assert!(reach(7004).is_err(), "forwarded after its NAT rules went");
    });
}

#[test]
fn each_bridge_keeps_its_fence_when_another_is_fenced() {
    require!("host", Need::Root);
    in_new_netns(|| {
        ensure_host_fence(&fence("bgold0")).expect("old bridge");
        ensure_host_fence(&fence(BRIDGE)).expect("new bridge");
        ensure_host_fence(&fence(BRIDGE)).expect("again");
        add_vm_rules("vm-a", Ipv4Addr::new(10, 77, 0, 2), &fence(BRIDGE)).expect("vm");
        assert_eq!(fenced_bridges().expect("list"), ["bgold0", BRIDGE]);
        let rules = banger_rules();
        for bridge in ["bgold0", BRIDGE] {
            let comment = format!("banger fence:{bridge}");
            let count = rules.iter().filter(|(_, c)| *c == comment).count();
            assert_eq!(count, 9, "{bridge}: {rules:?}");
        }
        let input = run("nft", &["list", "chain", "inet", "banger", "input"]);
        // DNS is admitted to the sidecar's address only.
        assert!(
            input.contains("iifname \"bgtest0\" ip daddr 10.77.0.1 udp dport 53 accept"),
            "{input}"
        );
        assert!(
            !input.contains("iifname \"bgtest0\" udp dport 53 accept"),
            "{input}"
        );
    });
}
