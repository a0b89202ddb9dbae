//! The VM name server against a real resolver client (`dig`), over UDP and
//! TCP, with a tiny upstream server standing in for the host's resolvers.
//! Runs on loopback with ephemeral ports, so it needs no privileges; the
//! routing through systemd-resolved runs where resolved does (the in-guest tier).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use banger::host::dns::{
    DnsConfig, DnsServer, NameLookup, route_domain_via_resolved, upstream_resolvers,
};
use banger::host::net::bridge::interface_addresses;
use banger_testkit::{Need, in_guest, require};
use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, ResourceRecord};

/// VMs by name: address and whether they are running.
#[derive(Default)]
struct FakeVms(Mutex<HashMap<String, (Ipv4Addr, bool)>>);

impl FakeVms {
    fn set(&self, name: &str, ip: Ipv4Addr, running: bool) {
        self.0
            .lock()
            .expect("lock")
            .insert(name.to_string(), (ip, running));
    }
}

impl NameLookup for FakeVms {
    fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
        let vms = self.0.lock().expect("lock");
        vms.get(name)
            .filter(|(_, running)| *running)
            .map(|(ip, _)| *ip)
    }
}

const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 99);

/// Answers `<anything>.upstream.test` A with 192.0.2.99 over UDP and TCP;
/// never answers `silent.test`. Threads end with the test process.
fn spawn_upstream() -> SocketAddr {
    fn answer(query: &[u8]) -> Option<Vec<u8>> {
        let query = Packet::parse(query).ok()?;
        let question = query.questions.first()?;
        if question.qname.to_string().starts_with("silent") {
            return None;
        }
        let mut reply = Packet::new_reply(query.id());
        reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
        reply.questions = query.questions.clone();
        reply.answers.push(ResourceRecord::new(
            question.qname.clone(),
            CLASS::IN,
            60,
            RData::A(A {
                address: u32::from(UPSTREAM_ANSWER),
            }),
        ));
        reply.build_bytes_vec().ok()
    }

    let udp = UdpSocket::bind("127.0.0.2:0").expect("bind upstream udp");
    let addr = udp.local_addr().expect("addr");
    let tcp = TcpListener::bind(addr).expect("bind upstream tcp");
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((len, peer)) = udp.recv_from(&mut buf) {
            if let Some(reply) = answer(&buf[..len]) {
                let _ = udp.send_to(&reply, peer);
            }
        }
    });
    thread::spawn(move || {
        for mut stream in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                continue;
            }
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut query).is_err() {
                continue;
            }
            if let Some(reply) = answer(&query) {
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                let _ = stream.write_all(&framed);
            }
        }
    });
    addr
}

struct Fixture {
    vms: Arc<FakeVms>,
    server: DnsServer,
}

fn start_server() -> Fixture {
    let vms = Arc::new(FakeVms::default());
    vms.set("web", Ipv4Addr::new(172, 30, 0, 5), true);
    vms.set("db", Ipv4Addr::new(172, 30, 0, 6), false);
    let server = DnsServer::start(
        DnsConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            domain: "vm".into(),
            upstreams: vec![spawn_upstream()],
            upstream_timeout: Duration::from_secs(1),
        },
        vms.clone(),
    )
    .expect("start dns");
    Fixture { vms, server }
}

#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
}

/// Runs `dig` against `server`; `extra` adds options such as `+tcp`.
fn dig(server: SocketAddr, name: &str, qtype: &str, extra: &[&str]) -> Dig {
    let at = format!("@{}", server.ip());
    let port = server.port().to_string();
    let output = Command::new("dig")
        .args([at.as_str(), "-p", &port, name, qtype])
        .args(["+noall", "+comments", "+answer", "+time=3", "+tries=1"])
        .args(extra)
        .output()
        .expect("run dig (dnsutils)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("NO REPLY")
        .to_string();
    let flags = text
        .split(";; flags: ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .map(|f| f.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    Dig {
        status,
        flags,
        answers,
    }
}

#[test]
fn running_vm_names_resolve_over_udp_and_tcp() {
    let fx = start_server();
    for transport in [&[][..], &["+tcp"][..]] {
        let reply = dig(fx.server.local_addr(), "web.vm", "A", transport);
        assert_eq!(reply.status, "NOERROR", "{transport:?} {reply:?}");
        assert!(reply.flags.contains(&"aa".to_string()), "{reply:?}");
        assert_eq!(reply.answers, ["web.vm. 5 IN A 172.30.0.5"], "{reply:?}");
    }
    let upper = dig(fx.server.local_addr(), "WEB.VM", "A", &[]);
    assert_eq!(upper.answers.len(), 1, "{upper:?}");
}

#[test]
fn stopped_and_unknown_vms_are_nxdomain() {
    let fx = start_server();
    for transport in [&[][..], &["+tcp"][..]] {
        for name in ["db.vm", "nosuch.vm", "a.web.vm"] {
            let reply = dig(fx.server.local_addr(), name, "A", transport);
            assert_eq!(reply.status, "NXDOMAIN", "{name} {transport:?} {reply:?}");
            assert!(reply.answers.is_empty(), "{reply:?}");
        }
    }
    fx.vms.set("db", Ipv4Addr::new(172, 30, 0, 6), true);
    let started = dig(fx.server.local_addr(), "db.vm", "A", &[]);
    assert_eq!(started.answers, ["db.vm. 5 IN A 172.30.0.6"], "{started:?}");
    fx.vms.set("web", Ipv4Addr::new(172, 30, 0, 5), false);
    let stopped = dig(fx.server.local_addr(), "web.vm", "A", &[]);
    assert_eq!(stopped.status, "NXDOMAIN", "{stopped:?}");
}

#[test]
fn aaaa_for_a_vm_is_an_empty_answer() {
    let fx = start_server();
    for transport in [&[][..], &["+tcp"][..]] {
        let reply = dig(fx.server.local_addr(), "web.vm", "AAAA", transport);
        assert_eq!(reply.status, "NOERROR", "{reply:?}");
        assert!(reply.answers.is_empty(), "{reply:?}");
    }
}

#[test]
fn other_names_are_answered_by_the_upstream() {
    let fx = start_server();
    for transport in [&[][..], &["+tcp"][..]] {
        let reply = dig(fx.server.local_addr(), "www.upstream.test", "A", transport);
        assert_eq!(reply.status, "NOERROR", "{transport:?} {reply:?}");
        assert!(!reply.flags.contains(&"aa".to_string()), "{reply:?}");
        assert_eq!(
            reply.answers,
            ["www.upstream.test. 60 IN A 192.0.2.99"],
            "{reply:?}"
        );
    }
}

#[test]
fn an_upstream_that_never_answers_yields_servfail() {
    let fx = start_server();
    let started = Instant::now();
    let reply = dig(fx.server.local_addr(), "silent.test", "A", &[]);
    assert_eq!(reply.status, "SERVFAIL", "{reply:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_stopped_server_releases_its_port() {
    let fx = start_server();
    let addr = fx.server.local_addr();
    fx.server.stop();
    let reply = dig(addr, "web.vm", "A", &["+time=1"]);
    assert_eq!(reply.status, "NO REPLY", "{reply:?}");
    UdpSocket::bind(addr).expect("UDP port free again");
    TcpListener::bind(addr).expect("TCP port free again");
}

#[test]
fn resolved_routing_is_skipped_when_resolved_is_not_running() {
    require!(
        "resolved",
        Need::That(
            !resolved_active(),
            "systemd-resolved runs here (resolved_routes_the_domain_on_the_bridge covers it)"
        )
    );
    let routed = route_domain_via_resolved("banger0", Ipv4Addr::new(172, 30, 0, 1), "vm")
        .expect("no error without resolved");
    assert!(!routed);
}

fn resolved_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "systemd-resolved"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Where resolved runs (the in-guest tier's guest), routing the domain on a
/// bridge makes resolved send the domain's names to the bridge's server, and
/// only those.
#[test]
fn resolved_routes_the_domain_on_the_bridge() {
    require!(
        "resolved",
        Need::Root,
        Need::That(resolved_active(), "systemd-resolved is not running"),
        Need::That(
            in_guest::active(),
            "changes the host's DNS (scripts/test-in-guest.sh runs this in a guest)"
        ),
    );
    let bridge = "bgdnstest0";
    banger_testkit::run("ip", &["link", "add", bridge, "type", "bridge"]);
    banger_testkit::run("ip", &["addr", "add", "172.31.250.1/24", "dev", bridge]);
    banger_testkit::run("ip", &["link", "set", bridge, "up"]);
    let routed = route_domain_via_resolved(bridge, Ipv4Addr::new(172, 31, 250, 1), "testvm");
    let domains = banger_testkit::run("resolvectl", &["domain", bridge]);
    let servers = banger_testkit::run("resolvectl", &["dns", bridge]);
    let default_route = banger_testkit::run("resolvectl", &["default-route", bridge]);
    banger_testkit::run("ip", &["link", "del", bridge]);
    assert!(routed.expect("routing succeeds"), "resolved runs here");
    assert!(domains.contains("~testvm"), "{domains}");
    assert!(servers.contains("172.31.250.1"), "{servers}");
    assert!(default_route.contains("no"), "{default_route}");
}

#[test]
fn upstreams_are_never_the_resolved_stub_or_an_address_of_this_host() {
    let own = interface_addresses().expect("list addresses");
    for upstream in upstream_resolvers() {
        let ip = upstream.ip();
        assert_eq!(upstream.port(), 53);
        assert_ne!(
            ip,
            Ipv4Addr::new(127, 0, 0, 53),
            "the stub would loop back to resolved"
        );
        assert!(
            ip.is_loopback() || !own.contains(&ip),
            "{ip} is this host's own address"
        );
    }
}
