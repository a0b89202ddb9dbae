//! The VM name server: answers `<name>.<domain>` from a [`NameLookup`],
//! forwards every other query to the host's upstream resolvers, over UDP and
//! TCP; plus finding those upstreams and routing the domain via systemd-resolved.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, OPCODE, Packet, PacketFlag, QCLASS, QTYPE, RCODE, ResourceRecord, TYPE};

use crate::host::net::bridge::interface_addresses;
use crate::host::net::{NetError, validate_ifname};
use crate::host::run::run;

/// The port guests and the host query by default.
pub const DEFAULT_PORT: u16 = 53;
/// How long clients may cache a VM's address: short, VMs come and go.
const ANSWER_TTL: u32 = 5;
/// Forwarded UDP queries (and TCP connections) handled at once; more get SERVFAIL.
const MAX_IN_FLIGHT: usize = 64;
/// Of those, the forwarded UDP queries one client address may hold: a guest
/// flooding queries gets SERVFAIL for its own while the others' are still
/// forwarded.
const MAX_IN_FLIGHT_PER_CLIENT: usize = 8;
/// And the TCP connections (with its UDP queries) one client may hold: more
/// than its UDP share, as a closed connection's slot comes back only once
/// its thread has seen the close, yet never all of them.
const MAX_TCP_PER_CLIENT: usize = MAX_IN_FLIGHT / 2;
/// How often the UDP loop checks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(200);
/// How long an idle TCP client connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// systemd-resolved's local stub listeners; never an upstream.
const RESOLVED_STUBS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(127, 0, 0, 54)];

/// Where VM names come from.
pub trait NameLookup: Send + Sync {
    /// The address of VM `name` (the label, without the domain), only while it is alive.
    fn lookup(&self, name: &str) -> Option<Ipv4Addr>;
}

/// What the server listens on and whom it forwards to.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Address and port to bind, UDP and TCP (the bridge gateway in production;
    /// port 0 picks a free one, see [`DnsServer::local_addr`]).
    pub listen: SocketAddr,
    /// The domain served authoritatively, e.g. `vm`.
    pub domain: String,
    /// Resolvers for every other name, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// Time budget for one forwarded query across all upstreams; SERVFAIL after it.
    pub upstream_timeout: Duration,
}

/// A running server: a UDP thread and a TCP accept thread. Stops on drop.
pub struct DnsServer {
    local_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on `config.listen` and starts serving.
    pub fn start(config: DnsConfig, names: Arc<dyn NameLookup>) -> Result<DnsServer, NetError> {
        let bind_error = |addr| move |source| NetError::DnsBind { addr, source };
        let udp = UdpSocket::bind(config.listen).map_err(bind_error(config.listen))?;
        let local_addr = udp.local_addr().map_err(bind_error(config.listen))?;
        let tcp = TcpListener::bind(local_addr).map_err(bind_error(local_addr))?;
        udp.set_read_timeout(Some(STOP_POLL))
            .map_err(bind_error(local_addr))?;

        let stop = Arc::new(AtomicBool::new(false));
        let resolver = Arc::new(Resolver {
            domain: normalise(&config.domain),
            names,
            upstreams: config.upstreams,
            timeout: config.upstream_timeout,
            in_flight: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        });
        let udp_thread = {
            let (resolver, stop) = (Arc::clone(&resolver), Arc::clone(&stop));
            thread::Builder::new()
                .name("dns-udp".into())
                .spawn(move || serve_udp(Arc::new(udp), resolver, stop))
                .map_err(bind_error(local_addr))?
        };
        let tcp_thread = {
            let (resolver, stop) = (Arc::clone(&resolver), Arc::clone(&stop));
            thread::Builder::new()
                .name("dns-tcp".into())
                .spawn(move || serve_tcp(tcp, resolver, stop))
        };
        let tcp_thread = match tcp_thread {
            Ok(handle) => handle,
            Err(err) => {
                stop.store(true, Ordering::SeqCst);
                let _ = udp_thread.join();
                return Err(bind_error(local_addr)(err));
            }
        };
        Ok(DnsServer {
            local_addr,
            stop,
            threads: vec![udp_thread, tcp_thread],
        })
    }

    /// The address actually bound (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits for the listener threads to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the blocking accept(); the UDP loop polls the flag.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Resolver {
    domain: String,
    names: Arc<dyn NameLookup>,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    in_flight: AtomicUsize,
    /// Forwarding slots held per client address.
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

impl Resolver {
    /// Reserves one forwarding slot for `client`; `None` when all are busy
    /// or `client` already holds `share` of them.
    fn reserve(self: &Arc<Self>, client: IpAddr, share: usize) -> Option<Slot> {
        {
            let mut held = self
                .per_client
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mine = held.entry(client).or_insert(0);
            if *mine >= share {
                return None;
            }
            *mine += 1;
        }
        let slot = Slot {
            resolver: Arc::clone(self),
            client,
        };
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= MAX_IN_FLIGHT {
            // Dropping the slot gives both counts back.
            return None;
        }
        Some(slot)
    }
}

/// One unit of [`MAX_IN_FLIGHT`] (and of its client's share), released on drop.
struct Slot {
    resolver: Arc<Resolver>,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.resolver.in_flight.fetch_sub(1, Ordering::SeqCst);
        let mut held = self
            .resolver
            .per_client
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(mine) = held.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                held.remove(&self.client);
            }
        }
    }
}

fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 65535];
    while !stop.load(Ordering::SeqCst) {
        let (len, peer) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(_) => continue,
        };
        let query = &buf[..len];
        match respond(query, &resolver) {
            Response::Local(reply) => {
                let _ = socket.send_to(&reply, peer);
            }
            Response::Forward => {
                let Some(slot) = resolver.reserve(peer.ip(), MAX_IN_FLIGHT_PER_CLIENT) else {
                    if let Some(reply) = error_reply(query, RCODE::ServerFailure) {
                        let _ = socket.send_to(&reply, peer);
                    }
                    continue;
                };
                let (socket, query) = (Arc::clone(&socket), query.to_vec());
                // A failed spawn drops the closure, which releases the slot.
                let _ = thread::Builder::new()
                    .name("dns-forward".into())
                    .spawn(move || {
                        let resolver = &slot.resolver;
                        let reply = forward_udp(&query, &resolver.upstreams, resolver.timeout)
                            .or_else(|| error_reply(&query, RCODE::ServerFailure));
                        if let Some(reply) = reply {
                            let _ = socket.send_to(&reply, peer);
                        }
                    });
            }
            Response::Ignore => {}
        }
    }
}

fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>, stop: Arc<AtomicBool>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let Some(slot) = resolver.reserve(peer.ip(), MAX_TCP_PER_CLIENT) else {
            continue;
        };
        let _ = thread::Builder::new()
            .name("dns-tcp-client".into())
            .spawn(move || serve_tcp_client(stream, &slot.resolver));
    }
}

fn serve_tcp_client(mut stream: TcpStream, resolver: &Resolver) {
    if stream.set_read_timeout(Some(TCP_IDLE)).is_err() {
        return;
    }
    while let Ok(query) = read_tcp_message(&mut stream) {
        let reply = match respond(&query, resolver) {
            Response::Local(reply) => Some(reply),
            Response::Forward => forward_tcp(&query, &resolver.upstreams, resolver.timeout)
                .or_else(|| error_reply(&query, RCODE::ServerFailure)),
            Response::Ignore => None,
        };
        let Some(reply) = reply else { return };
        if write_tcp_message(&mut stream, &reply).is_err() {
            return;
        }
    }
}

fn read_tcp_message(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message)?;
    Ok(message)
}

fn write_tcp_message(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len =
        u16::try_from(message.len()).map_err(|_| io::Error::other("DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

/// What to do with one incoming message.
#[derive(Debug, PartialEq, Eq)]
enum Response {
    /// Send these bytes back.
    Local(Vec<u8>),
    /// Relay the query to an upstream resolver.
    Forward,
    /// Not a query: no reply.
    Ignore,
}

/// How a question is answered.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The VM's address (A or ANY query for a live VM).
    Address(Ipv4Addr),
    /// The name exists but has no record of that type (NOERROR, empty).
    NoData,
    /// No such VM, or it is not running.
    NxDomain,
    /// Not in our domain.
    Forward,
}

/// Lower-case, without the trailing dot.
fn normalise(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn classify(qname: &str, qtype: QTYPE, domain: &str, names: &dyn NameLookup) -> Verdict {
    let qname = normalise(qname);
    if qname == domain {
        return Verdict::NoData;
    }
    let Some(label) = qname
        .strip_suffix(domain)
        .and_then(|rest| rest.strip_suffix('.'))
    else {
        return Verdict::Forward;
    };
    if label.is_empty() || label.contains('.') {
        return Verdict::NxDomain;
    }
    match names.lookup(label) {
        None => Verdict::NxDomain,
        Some(ip) if matches!(qtype, QTYPE::TYPE(TYPE::A) | QTYPE::ANY) => Verdict::Address(ip),
        Some(_) => Verdict::NoData,
    }
}

/// Whether `bytes` starts with a DNS header of a standard query with one
/// question, which is worth forwarding even if we cannot parse the rest.
fn looks_like_query(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes[2] & 0x80 == 0 && bytes[4..6] == [0, 1]
}

fn respond(query: &[u8], resolver: &Resolver) -> Response {
    let packet = match Packet::parse(query) {
        Ok(packet) => packet,
        Err(_) if looks_like_query(query) => return Response::Forward,
        Err(_) => return Response::Ignore,
    };
    if packet.has_flags(PacketFlag::RESPONSE) {
        return Response::Ignore;
    }
    let local = |rcode, answers, authoritative| {
        build_reply(&packet, rcode, answers, authoritative)
            .map_or(Response::Ignore, Response::Local)
    };
    if packet.opcode() != OPCODE::StandardQuery {
        return local(RCODE::NotImplemented, Vec::new(), false);
    }
    let [question] = packet.questions.as_slice() else {
        return local(RCODE::FormatError, Vec::new(), false);
    };
    if !matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY) {
        return Response::Forward;
    }
    let qname = question.qname.to_string();
    match classify(
        &qname,
        question.qtype,
        &resolver.domain,
        resolver.names.as_ref(),
    ) {
        Verdict::Forward if resolver.upstreams.is_empty() => {
            local(RCODE::ServerFailure, Vec::new(), false)
        }
        Verdict::Forward => Response::Forward,
        Verdict::NxDomain => local(RCODE::NameError, Vec::new(), true),
        Verdict::NoData => local(RCODE::NoError, Vec::new(), true),
        Verdict::Address(ip) => {
            let record = ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                ANSWER_TTL,
                RData::A(A {
                    address: u32::from(ip),
                }),
            );
            local(RCODE::NoError, vec![record], true)
        }
    }
}

/// The reply the server sends to one message (a UDP datagram or a TCP frame)
/// when no upstream resolver answers: names under `domain` come from
/// `names`, other queries get SERVFAIL. `None` when the server stays silent.
pub fn reply_without_upstreams(
    message: &[u8],
    domain: &str,
    names: Arc<dyn NameLookup>,
) -> Option<Vec<u8>> {
    let resolver = Resolver {
        domain: normalise(domain),
        names,
        upstreams: Vec::new(),
        timeout: Duration::ZERO,
        in_flight: AtomicUsize::new(0),
        per_client: Mutex::new(HashMap::new()),
    };
    match respond(message, &resolver) {
        Response::Local(reply) => Some(reply),
        Response::Forward => error_reply(message, RCODE::ServerFailure),
        Response::Ignore => None,
    }
}

fn build_reply<'a>(
    query: &Packet<'a>,
    rcode: RCODE,
    answers: Vec<ResourceRecord<'a>>,
    authoritative: bool,
) -> Option<Vec<u8>> {
    let mut reply = Packet::new_reply(query.id());
    *reply.opcode_mut() = query.opcode();
    *reply.rcode_mut() = rcode;
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    if authoritative {
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    }
    reply.questions = query.questions.clone();
    reply.answers = answers;
    reply.build_bytes_vec().ok()
}

/// An error reply to `query`: with its question when it parses, else just
/// the header (same id, RD copied).
fn error_reply(query: &[u8], rcode: RCODE) -> Option<Vec<u8>> {
    if let Ok(packet) = Packet::parse(query) {
        return build_reply(&packet, rcode, Vec::new(), false);
    }
    if query.len() < 12 {
        return None;
    }
    let mut header = vec![0u8; 12];
    header[..2].copy_from_slice(&query[..2]);
    header[2] = 0x80 | (query[2] & 0x79); // QR, opcode and RD from the query
    header[3] = 0x80 | (rcode as u8 & 0x0f); // RA and the code
    Some(header)
}

/// Splits `budget` across `upstreams` so the whole attempt fits in it.
fn per_upstream(budget: Duration, upstreams: usize) -> Duration {
    let share = budget / u32::try_from(upstreams.max(1)).unwrap_or(u32::MAX);
    share.max(Duration::from_millis(100))
}

fn unspecified_for(upstream: &SocketAddr) -> SocketAddr {
    match upstream {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    }
}

/// Relays `query` over UDP to each upstream in turn; the first reply with
/// the same id wins.
fn forward_udp(query: &[u8], upstreams: &[SocketAddr], budget: Duration) -> Option<Vec<u8>> {
    let timeout = per_upstream(budget, upstreams.len());
    let mut buf = vec![0u8; 65535];
    for upstream in upstreams {
        let Ok(socket) = UdpSocket::bind(unspecified_for(upstream)) else {
            continue;
        };
        if socket.connect(upstream).is_err() || socket.send(query).is_err() {
            continue;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match socket.recv(&mut buf) {
                Ok(len) if len >= 12 && buf[..2] == query[..2] => return Some(buf[..len].to_vec()),
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    None
}

/// Relays `query` over TCP to each upstream in turn.
fn forward_tcp(query: &[u8], upstreams: &[SocketAddr], budget: Duration) -> Option<Vec<u8>> {
    let timeout = per_upstream(budget, upstreams.len());
    upstreams.iter().find_map(|upstream| {
        let mut stream = TcpStream::connect_timeout(upstream, timeout).ok()?;
        stream.set_read_timeout(Some(timeout)).ok()?;
        stream.set_write_timeout(Some(timeout)).ok()?;
        write_tcp_message(&mut stream, query).ok()?;
        let reply = read_tcp_message(&mut stream).ok()?;
        (reply.len() >= 12 && reply[..2] == query[..2]).then_some(reply)
    })
}

/// The resolvers queries for non-VM names go to: `/etc/resolv.conf`'s
/// nameservers or, when that points at systemd-resolved's stub, resolved's
/// own upstreams (`/run/systemd/resolve/resolv.conf`, else `resolvectl dns`).
/// Never the stub itself nor an address of this host's interfaces other
/// than loopback (such as the bridge gateway this server listens on).
pub fn upstream_resolvers() -> Vec<SocketAddr> {
    let mut servers = read_nameservers("/etc/resolv.conf");
    if servers.iter().any(is_resolved_stub) {
        servers = read_nameservers("/run/systemd/resolve/resolv.conf");
        if servers.is_empty() {
            servers = resolvectl_dns();
        }
    }
    let local = interface_addresses().unwrap_or_default();
    select_upstreams(servers, &local)
}

fn read_nameservers(path: &str) -> Vec<IpAddr> {
    std::fs::read_to_string(path)
        .map(|text| parse_resolv_conf(&text))
        .unwrap_or_default()
}

fn is_resolved_stub(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if RESOLVED_STUBS.contains(v4))
}

/// The `nameserver` addresses of a resolv.conf, in order.
fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next()?.parse().ok())?
        })
        .collect()
}

/// The addresses listed by `resolvectl dns` (global and per link).
fn parse_resolvectl_dns(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| line.split_once(':').map(|(_, servers)| servers))
        .flat_map(str::split_whitespace)
        .filter_map(|server| server.split('#').next()?.parse().ok())
        .collect()
}

fn resolvectl_dns() -> Vec<IpAddr> {
    run(Command::new("resolvectl").arg("dns"))
        .map(|output| parse_resolvectl_dns(&String::from_utf8_lossy(&output.stdout)))
        .unwrap_or_default()
}

/// Drops stubs, this host's own non-loopback addresses, unusable IPv6
/// link-local addresses (no scope) and duplicates; port 53 on each.
fn select_upstreams(servers: Vec<IpAddr>, local: &[IpAddr]) -> Vec<SocketAddr> {
    let mut chosen: Vec<SocketAddr> = Vec::new();
    for ip in servers {
        let own = !ip.is_loopback() && local.contains(&ip);
        let link_local_v6 = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
        let addr = SocketAddr::new(ip, DEFAULT_PORT);
        if is_resolved_stub(&ip)
            || own
            || link_local_v6
            || ip.is_unspecified()
            || chosen.contains(&addr)
        {
            continue;
        }
        chosen.push(addr);
    }
    chosen
}

/// Routes `~<domain>` on `bridge` to the server at `gateway` in
/// systemd-resolved, so the host resolves VM names too, and keeps the bridge
/// from becoming a default DNS route. `Ok(false)` when resolved is not
/// running. Older resolved without `default-route` is tolerated.
pub fn route_domain_via_resolved(
    bridge: &str,
    gateway: Ipv4Addr,
    domain: &str,
) -> Result<bool, NetError> {
    validate_ifname(bridge)?;
    if !resolved_active() {
        return Ok(false);
    }
    resolvectl(&["dns", bridge, &gateway.to_string()])?;
    resolvectl(&["domain", bridge, &format!("~{}", normalise(domain))])?;
    let _ = resolvectl(&["default-route", bridge, "false"]);
    Ok(true)
}

/// Undoes [`route_domain_via_resolved`] for `bridge` (`resolvectl revert`):
/// false when resolved is not running; a link already gone is fine.
pub fn unroute_domain_via_resolved(bridge: &str) -> Result<bool, NetError> {
    validate_ifname(bridge)?;
    if !resolved_active() {
        return Ok(false);
    }
    match resolvectl(&["revert", bridge]) {
        Ok(()) => Ok(true),
        Err(err) if err.to_string().contains("not found") => Ok(false),
        Err(err) => Err(err),
    }
}

/// Whether systemd-resolved is running on this host.
pub fn resolved_active() -> bool {
    run(Command::new("systemctl").args(["is-active", "--quiet", "systemd-resolved"])).is_ok()
}

fn resolvectl(args: &[&str]) -> Result<(), NetError> {
    run(Command::new("resolvectl").args(args))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};

    struct Vms;

    impl NameLookup for Vms {
        fn lookup(&self, name: &str) -> Option<Ipv4Addr> {
            (name == "web").then_some(Ipv4Addr::new(172, 30, 0, 5))
        }
    }

    fn verdict(qname: &str, qtype: TYPE) -> Verdict {
        classify(qname, QTYPE::TYPE(qtype), "vm", &Vms)
    }

    #[test]
    fn live_vm_names_get_their_address() {
        let web = Verdict::Address(Ipv4Addr::new(172, 30, 0, 5));
        assert_eq!(verdict("web.vm", TYPE::A), web);
        assert_eq!(verdict("WEB.VM.", TYPE::A), web);
        assert_eq!(classify("web.vm", QTYPE::ANY, "vm", &Vms), web);
    }

    #[test]
    fn other_types_for_a_vm_are_empty_answers() {
        assert_eq!(verdict("web.vm", TYPE::AAAA), Verdict::NoData);
        assert_eq!(verdict("web.vm", TYPE::MX), Verdict::NoData);
        assert_eq!(verdict("vm", TYPE::A), Verdict::NoData);
    }

    #[test]
    fn unknown_or_stopped_vms_and_deeper_names_do_not_exist() {
        assert_eq!(verdict("db.vm", TYPE::A), Verdict::NxDomain);
        assert_eq!(verdict("db.vm", TYPE::AAAA), Verdict::NxDomain);
        assert_eq!(verdict("a.web.vm", TYPE::A), Verdict::NxDomain);
    }

    #[test]
    fn names_outside_the_domain_are_forwarded() {
        assert_eq!(verdict("example.com", TYPE::A), Verdict::Forward);
        assert_eq!(verdict("webvm", TYPE::A), Verdict::Forward);
        assert_eq!(verdict("web.vm.example.com", TYPE::A), Verdict::Forward);
    }

    fn resolver(upstreams: Vec<SocketAddr>) -> Resolver {
        Resolver {
            domain: "vm".into(),
            names: Arc::new(Vms),
            upstreams,
            timeout: Duration::from_secs(1),
            in_flight: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn one_client_cannot_take_every_forwarding_slot() {
        let resolver = Arc::new(resolver(Vec::new()));
        let flooder = IpAddr::from([172, 30, 0, 2]);
        let held: Vec<Slot> = (0..MAX_IN_FLIGHT_PER_CLIENT)
            .map(|_| {
                resolver
                    .reserve(flooder, MAX_IN_FLIGHT_PER_CLIENT)
                    .expect("within its share")
            })
            .collect();
        assert!(
            resolver
                .reserve(flooder, MAX_IN_FLIGHT_PER_CLIENT)
                .is_none(),
            "past its share"
        );
        let other = IpAddr::from([172, 30, 0, 3]);
        let theirs = resolver
            .reserve(other, MAX_IN_FLIGHT_PER_CLIENT)
            .expect("another guest is still served");
        drop(held);
        assert!(
            resolver
                .reserve(flooder, MAX_IN_FLIGHT_PER_CLIENT)
                .is_some(),
            "its slots came back"
        );
        drop(theirs);
        assert_eq!(resolver.in_flight.load(Ordering::SeqCst), 0);
        // Every client together still stops at the global bound.
        let all: Vec<Slot> = (0..MAX_IN_FLIGHT)
            .filter_map(|i| {
                resolver.reserve(
                    IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]),
                    MAX_IN_FLIGHT_PER_CLIENT,
                )
            })
            .collect();
        assert_eq!(all.len(), MAX_IN_FLIGHT);
        assert!(resolver.reserve(other, MAX_IN_FLIGHT_PER_CLIENT).is_none());
        drop(all);
        assert!(resolver.per_client.lock().unwrap().is_empty());
    }

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut packet = Packet::new_query(0x1234);
        packet.set_flags(PacketFlag::RECURSION_DESIRED);
        packet.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.build_bytes_vec().expect("query builds")
    }

    fn local_reply(bytes: &[u8], resolver: &Resolver) -> Vec<u8> {
        match respond(bytes, resolver) {
            Response::Local(reply) => reply,
            other => panic!("expected a local reply, got {other:?}"),
        }
    }

    #[test]
    fn replies_echo_id_question_and_flags() {
        let bytes = local_reply(&query("web.vm", TYPE::A), &resolver(Vec::new()));
        let reply = Packet::parse(&bytes).expect("parses");
        assert_eq!(reply.id(), 0x1234);
        assert!(reply.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        assert!(reply.has_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE));
        assert_eq!(reply.questions.len(), 1);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].rdata,
            RData::A(A {
                address: 0xac1e_0005
            })
        );
    }

    #[test]
    fn outside_names_forward_or_fail_without_upstreams() {
        let upstream = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 53), 53));
        let outside = query("example.com", TYPE::A);
        assert_eq!(
            respond(&outside, &resolver(vec![upstream])),
            Response::Forward
        );
        let reply = local_reply(&outside, &resolver(Vec::new()));
        assert_eq!(
            Packet::parse(&reply).expect("parses").rcode(),
            RCODE::ServerFailure
        );
    }

    #[test]
    fn responses_and_garbage_are_ignored() {
        let mut bytes = query("web.vm", TYPE::A);
        bytes[2] |= 0x80;
        assert_eq!(respond(&bytes, &resolver(Vec::new())), Response::Ignore);
        assert_eq!(respond(b"hello", &resolver(Vec::new())), Response::Ignore);
    }

    #[test]
    fn header_only_error_reply_keeps_id_and_rd() {
        let mut bytes = query("web.vm", TYPE::A);
        bytes.truncate(14);
        let reply = error_reply(&bytes, RCODE::ServerFailure).expect("header");
        assert_eq!(reply.len(), 12);
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(reply[2], 0x81);
        assert_eq!(reply[3], 0x82);
    }

    #[test]
    fn resolv_conf_nameservers_in_order() {
        let text = "# comment\nsearch lan\nnameserver 192.168.1.1\nnameserver  2001:db8::1\n\
                    nameserver fe80::1%eth0\noptions edns0\n";
        let servers = parse_resolv_conf(text);
        assert_eq!(
            servers,
            vec![
                IpAddr::from([192, 168, 1, 1]),
                "2001:db8::1".parse().expect("ip")
            ]
        );
    }

    #[test]
    fn resolvectl_output_lists_global_and_link_servers() {
        let text = "Global: 1.1.1.1#cloudflare-dns.com\nLink 2 (eth0): 192.168.1.1 fe80::1\nLink 5 (banger0): 172.30.0.1\n";
        let servers = parse_resolvectl_dns(text);
        assert_eq!(servers.len(), 4);
        assert_eq!(servers[0], IpAddr::from([1, 1, 1, 1]));
    }

    #[test]
    fn upstreams_exclude_stubs_own_addresses_and_duplicates() {
        let servers = vec![
            IpAddr::from([127, 0, 0, 53]),
            IpAddr::from([172, 30, 0, 1]),
            IpAddr::from([192, 168, 1, 1]),
            IpAddr::from([192, 168, 1, 1]),
            IpAddr::from([127, 0, 0, 1]),
            "fe80::1".parse().expect("ip"),
        ];
        let local = [IpAddr::from([172, 30, 0, 1]), IpAddr::from([127, 0, 0, 1])];
        let chosen = select_upstreams(servers, &local);
        assert_eq!(
            chosen,
            vec![
                SocketAddr::from(([192, 168, 1, 1], 53)),
                SocketAddr::from(([127, 0, 0, 1], 53)),
            ]
        );
    }

    #[test]
    fn forwarding_budget_is_shared_but_not_starved() {
        assert_eq!(
            per_upstream(Duration::from_secs(2), 2),
            Duration::from_secs(1)
        );
        assert_eq!(
            per_upstream(Duration::from_secs(2), 0),
            Duration::from_secs(2)
        );
        assert_eq!(
            per_upstream(Duration::from_millis(10), 3),
            Duration::from_millis(100)
        );
    }
}
