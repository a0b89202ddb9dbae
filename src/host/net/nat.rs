//! Per-VM NAT and published ports in the nftables table `inet banger`, and
//! nothing outside it.
//!
//! The table holds a `postrouting` NAT chain (masquerade) and a `forward`
//! filter chain (accepts). Each rule carries the comment `banger:<vm id>`,
//! which is how a VM's rules are found again and removed by handle.
//!
//! Forward rules match on the bridge and the guest address: a TAP enslaved
//! to the bridge is never the input interface at the IP forward hook (the
//! bridge is), so a rule on the TAP's name would never match.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use nftables::batch::Batch;
use nftables::expr::{
    CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField,
};
use nftables::helper::{self, DEFAULT_NFT, NftablesError};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, NAT, NATFamily, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use super::{NetError, validate_ifname};
use crate::state::model::PublishedPort;

/// The only table banger ever touches.
pub const TABLE: &str = "banger";
const NAT_CHAIN: &str = "postrouting";
const FORWARD_CHAIN: &str = "forward";
/// `srcnat`: after other tables' filtering, where masquerading belongs.
const NAT_PRIORITY: i32 = 100;
/// `filter`: the usual forward priority; other tables' chains still apply.
const FORWARD_PRIORITY: i32 = 0;
/// `filter` on the host's own input: what guests may reach on the host.
const INPUT_CHAIN: &str = "input";
/// Marks the fence rules of one bridge, `banger fence:<bridge>` (no
/// `banger:` prefix: they belong to no VM).
const FENCE_PREFIX: &str = "banger fence:";
/// The one fence of earlier versions, replaced by any bridge's.
const LEGACY_FENCE_COMMENT: &str = "banger host fence";

/// A bridge banger puts guests on, and where its sidecar serves DNS (the
/// bridge's gateway address): what the fence of that bridge admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub bridge: String,
    pub dns: SocketAddrV4,
}

/// Adds the NAT rules of the VM whose rules are tagged `key`: masquerade
/// traffic from `guest_ip` leaving through any interface but the bridge,
/// accept forwarding from the guest, and accept established/related traffic
/// back to it; and sets the bridge's fence. Creates the table and chains if
/// needed and replaces rules the VM already had, in one transaction.
pub fn add_vm_rules(key: &str, guest_ip: Ipv4Addr, fence: &Fence) -> Result<(), NetError> {
    validate_ifname(&fence.bridge)?;
    let (stale, fenced) = match list_table()? {
        Some(ruleset) => (
            vm_rule_handles(&ruleset, key),
            fence_rule_handles(&ruleset, &fence.bridge),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let batch = vm_rules_batch(key, guest_ip, fence, &stale, &fenced);
    helper::apply_ruleset(&batch).map_err(|err| nft_error("add rules", err))
}

/// Sets the fence of one bridge, leaving every other bridge's as it is (a
/// bridge a config change left behind, another home's):
///
/// - from guests, the host itself accepts only DNS to the sidecar's
///   address, ICMP, and replies to connections the host opened (SSH to
///   guests); everything else arriving on the bridge for the host is dropped;
/// - forwarding to or from the bridge is dropped, except what a VM's NAT
///   rules accept (inserted ahead of the fence) and published ports
///   (connections banger's DNAT made): a guest without NAT reaches nothing
///   beyond the host.
///
/// Idempotent: the bridge's fence rules are replaced in one transaction.
pub fn ensure_host_fence(fence: &Fence) -> Result<(), NetError> {
    validate_ifname(&fence.bridge)?;
    let fenced = match list_table()? {
        Some(ruleset) => fence_rule_handles(&ruleset, &fence.bridge),
        None => Vec::new(),
    };
    let mut batch = Batch::new();
    fence_into(&mut batch, fence, &fenced);
    helper::apply_ruleset(&batch.to_nftables()).map_err(|err| nft_error("set the host fence", err))
}

/// The comment of the fence rules of `bridge`.
fn fence_comment(bridge: &str) -> String {
    format!("{FENCE_PREFIX}{bridge}")
}

/// The bridges whose fence is set, from the rules' comments.
pub fn fenced_bridges() -> Result<Vec<String>, NetError> {
    let Some(ruleset) = list_table()? else {
        return Ok(Vec::new());
    };
    let bridges: BTreeSet<String> = rules(&ruleset)
        .filter_map(|rule| rule.comment.as_deref()?.strip_prefix(FENCE_PREFIX))
        .map(str::to_owned)
        .collect();
    Ok(bridges.into_iter().collect())
}

/// (chain, handle) of the fence rules of `bridge`, and of the fence rules
/// of banger versions that kept one fence for one bridge.
fn fence_rule_handles(ruleset: &Nftables<'static>, bridge: &str) -> Vec<(String, u32)> {
    let comment = fence_comment(bridge);
    rules(ruleset)
        .filter(|rule| {
            rule.comment
                .as_deref()
                .is_some_and(|c| c == comment || c == LEGACY_FENCE_COMMENT)
        })
        .filter_map(|rule| Some((rule.chain.to_string(), rule.handle?)))
        .collect()
}

fn fence_into(batch: &mut Batch<'static>, fence: &Fence, stale: &[(String, u32)]) {
    let comment = fence_comment(&fence.bridge);
    let bridge = fence.bridge.as_str();
    let rule =
        |chain: &'static str, expr: Vec<Statement<'static>>| tagged_rule(&comment, chain, expr);
    let from_guests = || matches(meta(MetaKey::Iifname), Operator::EQ, text(bridge));
    let to_guests = || matches(meta(MetaKey::Oifname), Operator::EQ, text(bridge));
    batch.add(banger_table());
    batch.add(NfListObject::Chain(base_chain(
        INPUT_CHAIN,
        NfChainType::Filter,
        NfHook::Input,
        FORWARD_PRIORITY,
    )));
    batch.add(NfListObject::Chain(base_chain(
        FORWARD_CHAIN,
        NfChainType::Filter,
        NfHook::Forward,
        FORWARD_PRIORITY,
    )));
    for (chain, handle) in stale {
        batch.delete(NfListObject::Rule(rule_ref(chain.clone(), *handle)));
    }
    for protocol in ["udp", "tcp"] {
        batch.add(rule(
            INPUT_CHAIN,
            vec![
                from_guests(),
                matches(
                    ip_field("daddr"),
                    Operator::EQ,
                    text(fence.dns.ip().to_string()),
                ),
                matches(
                    payload(protocol, "dport"),
                    Operator::EQ,
                    Expression::Number(u32::from(fence.dns.port())),
                ),
                Statement::Accept(None),
            ],
        ));
    }
    batch.add(rule(
        INPUT_CHAIN,
        vec![
            from_guests(),
            matches(meta(MetaKey::L4proto), Operator::EQ, text("icmp")),
            Statement::Accept(None),
        ],
    ));
    batch.add(rule(
        INPUT_CHAIN,
        vec![
            from_guests(),
            established_or_related(),
            Statement::Accept(None),
        ],
    ));
    batch.add(rule(
        INPUT_CHAIN,
        vec![from_guests(), Statement::Drop(None)],
    ));
    // Appended: every VM's NAT accepts are inserted ahead of these.
    let sides = || [from_guests(), to_guests()];
    for side in sides() {
        batch.add(rule(
            FORWARD_CHAIN,
            vec![side, dnat_tracked(), Statement::Accept(None)],
        ));
    }
    for side in sides() {
        batch.add(rule(FORWARD_CHAIN, vec![side, Statement::Drop(None)]));
    }
}

fn established_or_related() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        Expression::List(vec![text("established"), text("related")]),
    )
}

/// Removes VM `vm_id`'s rules by handle. `Ok` when the table or the rules are
/// already gone.
pub fn remove_vm_rules(vm_id: &str) -> Result<(), NetError> {
    let Some(ruleset) = list_table()? else {
        return Ok(());
    };
    let handles = vm_rule_handles(&ruleset, vm_id);
    if handles.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for (chain, handle) in handles {
        batch.delete(NfListObject::Rule(rule_ref(chain, handle)));
    }
    helper::apply_ruleset(&batch.to_nftables()).map_err(|err| nft_error("delete rules", err))
}

/// The ids of the VMs that have rules in the table, sorted (for `gc`).
pub fn vms_with_rules() -> Result<Vec<String>, NetError> {
    let Some(ruleset) = list_table()? else {
        return Ok(Vec::new());
    };
    let ids: BTreeSet<String> = rules(&ruleset)
        .filter_map(|rule| rule_owner(rule).map(str::to_string))
        .collect();
    Ok(ids.into_iter().collect())
}

/// The table as listed by `nft -j`, or `None` when it does not exist.
fn list_table() -> Result<Option<Nftables<'static>>, NetError> {
    match helper::get_current_ruleset_with_args(DEFAULT_NFT, &["list", "table", "inet", TABLE]) {
        Ok(ruleset) => Ok(Some(ruleset)),
        Err(NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(None)
        }
        Err(err) => Err(nft_error("list rules", err)),
    }
}

fn nft_error(op: &'static str, err: NftablesError) -> NetError {
    let detail = match err {
        NftablesError::NftFailed { stderr, .. } => stderr.trim().to_string(),
        other => other.to_string(),
    };
    NetError::Nft { op, detail }
}

fn rules<'a>(ruleset: &'a Nftables<'static>) -> impl Iterator<Item = &'a Rule<'static>> {
    ruleset.objects.iter().filter_map(|object| match object {
        NfObject::ListObject(NfListObject::Rule(rule))
            if rule.family == NfFamily::INet && rule.table == TABLE =>
        {
            Some(rule)
        }
        _ => None,
    })
}

/// The VM id a rule belongs to, from its `banger:<id>` comment.
fn rule_owner<'a>(rule: &'a Rule<'static>) -> Option<&'a str> {
    crate::state::layout::vm_of_nat_comment(rule.comment.as_deref()?)
}

/// (chain, handle) of each rule that belongs to `vm_id`.
fn vm_rule_handles(ruleset: &Nftables<'static>, vm_id: &str) -> Vec<(String, u32)> {
    rules(ruleset)
        .filter(|rule| rule_owner(rule) == Some(vm_id))
        .filter_map(|rule| Some((rule.chain.to_string(), rule.handle?)))
        .collect()
}

fn rule_ref(chain: String, handle: u32) -> Rule<'static> {
    Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(Vec::new()),
        handle: Some(handle),
        index: None,
        comment: None,
    }
}

fn base_chain(name: &'static str, kind: NfChainType, hook: NfHook, prio: i32) -> Chain<'static> {
    Chain {
        family: NfFamily::INet,
        table: TABLE.into(),
        name: name.into(),
        newname: None,
        handle: None,
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        dev: None,
        policy: Some(NfChainPolicy::Accept),
    }
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn ip_field(field: &'static str) -> Expression<'static> {
    payload("ip", field)
}

fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

fn text(value: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(value.into()))
}

/// The transaction that ensures table and chains, drops `stale` rules and
/// adds VM `vm_id`'s three rules.
/// A rule of one VM in banger's table, tagged with its comment.
fn tagged_rule(
    comment: &str,
    chain: &'static str,
    expr: Vec<Statement<'static>>,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some(Cow::Owned(comment.to_owned())),
    })
}

/// Table `inet banger` (adding it is a no-op when it exists).
fn banger_table() -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: TABLE.into(),
        handle: None,
    })
}

/// The transaction that ensures table and chains, drops `stale` rules,
/// adds the VM's three rules (its forward accepts inserted ahead of the
/// fence) and replaces the bridge's fence (`fenced`: its rules now).
fn vm_rules_batch(
    key: &str,
    guest_ip: Ipv4Addr,
    fence: &Fence,
    stale: &[(String, u32)],
    fenced: &[(String, u32)],
) -> Nftables<'static> {
    let comment = crate::state::layout::nat_comment_for(key);
    let guest = guest_ip.to_string();
    let bridge = fence.bridge.as_str();
    let rule = |chain: &'static str, expr| tagged_rule(&comment, chain, expr);

    let mut batch = Batch::new();
    batch.add(banger_table());
    batch.add(NfListObject::Chain(base_chain(
        NAT_CHAIN,
        NfChainType::NAT,
        NfHook::Postrouting,
        NAT_PRIORITY,
    )));
    for (chain, handle) in stale {
        batch.delete(NfListObject::Rule(rule_ref(chain.clone(), *handle)));
    }
    fence_into(&mut batch, fence, fenced);
    batch.add(rule(
        NAT_CHAIN,
        vec![
            matches(ip_field("saddr"), Operator::EQ, text(guest.clone())),
            matches(meta(MetaKey::Oifname), Operator::NEQ, text(bridge)),
            Statement::Masquerade(None),
        ],
    ));
    for expr in [
        vec![
            matches(meta(MetaKey::Oifname), Operator::EQ, text(bridge)),
            matches(ip_field("daddr"), Operator::EQ, text(guest.clone())),
            established_or_related(),
            Statement::Accept(None),
        ],
        vec![
            matches(meta(MetaKey::Iifname), Operator::EQ, text(bridge)),
            matches(ip_field("saddr"), Operator::EQ, text(guest.clone())),
            Statement::Accept(None),
        ],
    ] {
        batch.add_cmd(NfCmd::Insert(rule(FORWARD_CHAIN, expr)));
    }
    batch.to_nftables()
}

/// Published ports live in chains of their own, so that a VM's port rules
/// can be replaced or removed without touching its NAT rules.
const PREROUTING_CHAIN: &str = "prerouting";
const OUTPUT_CHAIN: &str = "output";
const PORTS_POSTROUTING_CHAIN: &str = "ports-postrouting";
const PORTS_FORWARD_CHAIN: &str = "ports-forward";
const PORT_CHAINS: [&str; 4] = [
    PREROUTING_CHAIN,
    OUTPUT_CHAIN,
    PORTS_POSTROUTING_CHAIN,
    PORTS_FORWARD_CHAIN,
];
/// `dstnat`: where destination NAT belongs.
const DNAT_PRIORITY: i32 = -100;

/// Adds VM `vm_id`'s published ports, replacing any it had, in one
/// transaction: DNAT of `ADDR:HOST_PORT` to the guest in `prerouting` (from
/// other machines) and `output` (from the host itself; `0.0.0.0` is any
/// local address), masquerade of loopback-sourced connections so that
/// `localhost` works (with `route_localnet` on the bridge), and a forward
/// accept of the translated traffic.
pub fn add_port_rules(
    vm_id: &str,
    guest_ip: Ipv4Addr,
    bridge: &str,
    ports: &[PublishedPort],
) -> Result<(), NetError> {
    validate_ifname(bridge)?;
    let stale = match list_table()? {
        Some(ruleset) => port_rule_handles(&ruleset, vm_id),
        None => Vec::new(),
    };
    helper::apply_ruleset(&port_rules_batch(vm_id, guest_ip, bridge, ports, &stale))
        .map_err(|err| nft_error("add port rules", err))
}

/// Removes VM `vm_id`'s published-port rules by handle; none left is fine.
pub fn remove_port_rules(vm_id: &str) -> Result<(), NetError> {
    let Some(ruleset) = list_table()? else {
        return Ok(());
    };
    let handles = port_rule_handles(&ruleset, vm_id);
    if handles.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for (chain, handle) in handles {
        batch.delete(NfListObject::Rule(rule_ref(chain, handle)));
    }
    helper::apply_ruleset(&batch.to_nftables()).map_err(|err| nft_error("delete port rules", err))
}

fn port_rule_handles(ruleset: &Nftables<'static>, vm_id: &str) -> Vec<(String, u32)> {
    vm_rule_handles(ruleset, vm_id)
        .into_iter()
        .filter(|(chain, _)| PORT_CHAINS.contains(&chain.as_str()))
        .collect()
}

/// The transaction that ensures the port chains, drops `stale` rules and
/// adds the rules of each of `ports`.
fn port_rules_batch(
    vm_id: &str,
    guest_ip: Ipv4Addr,
    bridge: &str,
    ports: &[PublishedPort],
    stale: &[(String, u32)],
) -> Nftables<'static> {
    let comment = crate::state::layout::nat_comment_for(vm_id);
    let rule = |chain: &'static str, expr| tagged_rule(&comment, chain, expr);
    let mut batch = Batch::new();
    batch.add(banger_table());
    for (name, kind, hook, prio) in [
        (
            PREROUTING_CHAIN,
            NfChainType::NAT,
            NfHook::Prerouting,
            DNAT_PRIORITY,
        ),
        (
            OUTPUT_CHAIN,
            NfChainType::NAT,
            NfHook::Output,
            DNAT_PRIORITY,
        ),
        (
            PORTS_POSTROUTING_CHAIN,
            NfChainType::NAT,
            NfHook::Postrouting,
            NAT_PRIORITY,
        ),
        (
            PORTS_FORWARD_CHAIN,
            NfChainType::Filter,
            NfHook::Forward,
            FORWARD_PRIORITY,
        ),
    ] {
        batch.add(NfListObject::Chain(base_chain(name, kind, hook, prio)));
    }
    for (chain, handle) in stale {
        batch.delete(NfListObject::Rule(rule_ref(chain.clone(), *handle)));
    }
    let guest = guest_ip.to_string();
    for port in ports {
        let proto = port.proto.as_str();
        let to_host = if port.addr.is_unspecified() {
            fib_daddr_is_local()
        } else {
            matches(ip_field("daddr"), Operator::EQ, text(port.addr.to_string()))
        };
        let host_port = matches(
            payload(proto, "dport"),
            Operator::EQ,
            Expression::Number(u32::from(port.host_port)),
        );
        let dnat = Statement::DNAT(Some(NAT {
            addr: Some(text(guest.clone())),
            family: Some(NATFamily::IP),
            port: Some(Expression::Number(u32::from(port.guest_port))),
            flags: None,
        }));
        let to_guest = || {
            vec![
                matches(ip_field("daddr"), Operator::EQ, text(guest.clone())),
                matches(
                    payload(proto, "dport"),
                    Operator::EQ,
                    Expression::Number(u32::from(port.guest_port)),
                ),
            ]
        };
        // Only the host itself can reach a loopback address.
        if !port.addr.is_loopback() {
            batch.add(rule(
                PREROUTING_CHAIN,
                vec![
                    matches(meta(MetaKey::Iifname), Operator::NEQ, text(bridge)),
                    to_host.clone(),
                    host_port.clone(),
                    dnat.clone(),
                ],
            ));
        }
        batch.add(rule(OUTPUT_CHAIN, vec![to_host, host_port, dnat]));
        let mut masquerade = vec![matches(
            ip_field("saddr"),
            Operator::EQ,
            Expression::Named(NamedExpression::Prefix(nftables::expr::Prefix {
                addr: Box::new(text("127.0.0.0")),
                len: 8,
            })),
        )];
        masquerade.extend(to_guest());
        masquerade.push(Statement::Masquerade(None));
        batch.add(rule(PORTS_POSTROUTING_CHAIN, masquerade));
        let mut forward = to_guest();
        forward.push(dnat_tracked());
        forward.push(Statement::Accept(None));
        batch.add(rule(PORTS_FORWARD_CHAIN, forward));
    }
    batch.to_nftables()
}

/// `fib daddr type local`: the packet is for one of the host's addresses.
fn fib_daddr_is_local() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Fib(Fib {
            result: FibResult::Type,
            flags: [FibFlag::Daddr].into_iter().collect(),
        })),
        Operator::EQ,
        text("local"),
    )
}

/// `ct status dnat`: the connection was translated by a published port.
fn dnat_tracked() -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: "status".into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        text("dnat"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn port_json(specs: &[&str]) -> Value {
        let ports: Vec<PublishedPort> = specs
            .iter()
            .map(|s| PublishedPort::parse(s).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        serde_json::to_value(port_rules_batch(
            "vm1",
            Ipv4Addr::new(10, 0, 0, 2),
            "banger0",
            &ports,
            &[("output".into(), 9), ("forward".into(), 3)],
        ))
        .expect("serialises")
    }

    fn added_rules<'v>(value: &'v Value, chain: &str) -> Vec<&'v Value> {
        commands(value)
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .filter(|rule| rule["chain"] == chain)
            .collect()
    }

    #[test]
    fn a_loopback_port_is_dnatted_from_the_host_only_and_masqueraded() {
        let value = port_json(&["127.0.0.1:2222:22"]);
        assert!(added_rules(&value, "prerouting").is_empty());
        let output = added_rules(&value, "output");
        assert_eq!(output.len(), 1);
        assert_eq!(output[0]["comment"], "banger:vm1");
        assert_eq!(
            output[0]["expr"],
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 2222}},
                {"dnat": {"addr": "10.0.0.2", "family": "ip", "port": 22}}
            ])
        );
        let masquerade = added_rules(&value, "ports-postrouting");
        assert_eq!(
            masquerade[0]["expr"][0],
            json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"prefix": {"addr": "127.0.0.0", "len": 8}}}})
        );
        assert_eq!(masquerade[0]["expr"][3], json!({"masquerade": null}));
        let forward = added_rules(&value, "ports-forward");
        assert_eq!(
            forward[0]["expr"][2],
            json!({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}})
        );
    }

    #[test]
    fn an_any_address_port_is_reached_from_outside_through_any_local_address() {
        let value = port_json(&["0.0.0.0:2223:22", "5353:53/udp"]);
        let prerouting = added_rules(&value, "prerouting");
        assert_eq!(prerouting.len(), 1);
        assert_eq!(
            prerouting[0]["expr"][0],
            json!({"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "banger0"}})
        );
        assert_eq!(
            prerouting[0]["expr"][1],
            json!({"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}})
        );
        let output = added_rules(&value, "output");
        assert_eq!(output.len(), 2);
        assert_eq!(
            output[1]["expr"][1]["match"]["left"]["payload"]["protocol"],
            "udp"
        );
        assert_eq!(output[1]["expr"][2]["dnat"]["port"], 53);
    }

    #[test]
    fn port_chains_hook_dstnat_and_only_port_rules_are_replaced() {
        let value = port_json(&["8080:80"]);
        let chains: Vec<&Value> = commands(&value)
            .iter()
            .filter_map(|c| c["add"].get("chain"))
            .collect();
        let hooks: Vec<(&Value, &Value, &Value)> = chains
            .iter()
            .map(|c| (&c["name"], &c["hook"], &c["prio"]))
            .collect();
        assert_eq!(
            hooks,
            vec![
                (&json!("prerouting"), &json!("prerouting"), &json!(-100)),
                (&json!("output"), &json!("output"), &json!(-100)),
                (
                    &json!("ports-postrouting"),
                    &json!("postrouting"),
                    &json!(100)
                ),
                (&json!("ports-forward"), &json!("forward"), &json!(0)),
            ]
        );
        let listed: Nftables<'static> = serde_json::from_value(json!({"nftables": [
            {"rule": {"family": "inet", "table": "banger", "chain": "postrouting", "handle": 5,
                      "comment": "banger:vm1", "expr": [{"masquerade": null}]}},
            {"rule": {"family": "inet", "table": "banger", "chain": "output", "handle": 6,
                      "comment": "banger:vm1", "expr": [{"accept": null}]}},
            {"rule": {"family": "inet", "table": "banger", "chain": "output", "handle": 7,
                      "comment": "banger:vm2", "expr": [{"accept": null}]}}
        ]}))
        .expect("parses");
        assert_eq!(
            port_rule_handles(&listed, "vm1"),
            vec![("output".to_string(), 6)]
        );
    }

    fn fence() -> Fence {
        Fence {
            bridge: "banger0".into(),
            dns: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53),
        }
    }

    fn batch_json(stale: &[(String, u32)]) -> Value {
        serde_json::to_value(vm_rules_batch(
            "vm1",
            Ipv4Addr::new(10, 0, 0, 2),
            &fence(),
            stale,
            &[("input".into(), 11)],
        ))
        .expect("serialises")
    }

    fn rules_of<'v>(value: &'v Value, verb: &str) -> Vec<&'v Value> {
        commands(value)
            .iter()
            .filter_map(|c| c[verb].get("rule"))
            .collect()
    }

    fn commands(value: &Value) -> &Vec<Value> {
        value["nftables"].as_array().expect("array of commands")
    }

    #[test]
    fn batch_only_touches_table_inet_banger() {
        let value = batch_json(&[("forward".into(), 7)]);
        for command in commands(&value) {
            let (_, object) = command
                .as_object()
                .and_then(|c| c.iter().next())
                .expect("one command");
            let (kind, body) = object
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("one object");
            assert_eq!(body["family"], "inet", "{command}");
            let table = if kind == "table" {
                &body["name"]
            } else {
                &body["table"]
            };
            assert_eq!(table, "banger", "{command}");
        }
    }

    #[test]
    fn chains_hook_postrouting_input_and_forward_with_accept_policy() {
        let value = batch_json(&[]);
        let chains: Vec<&Value> = commands(&value)
            .iter()
            .filter_map(|c| c["add"].get("chain"))
            .collect();
        let hooks: Vec<(&Value, &Value)> =
            chains.iter().map(|c| (&c["hook"], &c["type"])).collect();
        assert_eq!(
            hooks,
            [
                (&json!("postrouting"), &json!("nat")),
                (&json!("input"), &json!("filter")),
                (&json!("forward"), &json!("filter")),
            ]
        );
        assert_eq!(chains[0]["prio"], 100);
        // Other traffic of the host is none of banger's business.
        for chain in chains {
            assert_eq!(chain["policy"], "accept");
        }
        // The bridge's fence is replaced, not duplicated, and no chain is
        // flushed (other bridges' fences stay).
        assert!(commands(&value).iter().all(|c| c.get("flush").is_none()));
        let deleted = rules_of(&value, "delete");
        assert_eq!(deleted[0]["handle"], 11);
    }

    #[test]
    fn the_host_fence_lets_guests_reach_only_the_sidecar_s_dns_icmp_and_replies() {
        let value = batch_json(&[]);
        let fence: Vec<&Value> = rules_of(&value, "add")
            .into_iter()
            .filter(|rule| rule["chain"] == "input")
            .collect();
        assert_eq!(fence.len(), 5);
        for rule in &fence {
            assert_eq!(rule["comment"], "banger fence:banger0");
            assert_eq!(
                rule["expr"][0],
                json!({"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "banger0"}})
            );
        }
        for (rule, protocol) in fence.iter().zip(["udp", "tcp"]) {
            assert_eq!(
                rule["expr"][1],
                json!({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "10.0.0.1"}})
            );
            assert_eq!(
                rule["expr"][2]["match"]["left"]["payload"]["protocol"],
                protocol
            );
            assert_eq!(rule["expr"][2]["match"]["right"], 53);
        }
        assert_eq!(fence[4]["expr"][1], json!({"drop": null}));
    }

    #[test]
    fn forwarding_to_and_from_the_bridge_is_dropped_but_for_nat_and_published_ports() {
        let value = batch_json(&[]);
        let fence: Vec<&Value> = rules_of(&value, "add")
            .into_iter()
            .filter(|rule| rule["chain"] == "forward")
            .collect();
        assert_eq!(fence.len(), 4);
        for rule in &fence {
            assert_eq!(rule["comment"], "banger fence:banger0");
        }
        let side = |key: &str| json!({"match": {"op": "==", "left": {"meta": {"key": key}}, "right": "banger0"}});
        assert_eq!(fence[0]["expr"][0], side("iifname"));
        assert_eq!(fence[0]["expr"][1]["match"]["right"], "dnat");
        assert_eq!(fence[1]["expr"][0], side("oifname"));
        assert_eq!(fence[2]["expr"], json!([side("iifname"), {"drop": null}]));
        assert_eq!(fence[3]["expr"], json!([side("oifname"), {"drop": null}]));
        // The VM's accepts go ahead of the fence: inserted, not appended.
        let inserted = rules_of(&value, "insert");
        assert_eq!(inserted.len(), 2);
        for rule in inserted {
            assert_eq!(rule["chain"], "forward");
            assert_eq!(rule["comment"], "banger:vm1");
        }
    }

    #[test]
    fn every_rule_is_commented_with_the_vm_s_key() {
        let value = batch_json(&[]);
        let nat = rules_of(&value, "add")
            .into_iter()
            .filter(|rule| rule["chain"] == "postrouting")
            .collect::<Vec<_>>();
        assert_eq!(nat.len(), 1);
        assert_eq!(nat[0]["comment"], "banger:vm1");
        assert_eq!(
            nat[0]["expr"],
            json!([
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.0.0.2"}},
                {"match": {"op": "!=", "left": {"meta": {"key": "oifname"}}, "right": "banger0"}},
                {"masquerade": null}
            ])
        );
        let inserted = rules_of(&value, "insert");
        assert_eq!(
            inserted[0]["expr"][2],
            json!({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}})
        );
    }

    #[test]
    fn fence_rules_are_found_per_bridge() {
        let listed: Nftables<'static> = serde_json::from_value(json!({"nftables": [
            {"rule": {"family": "inet", "table": "banger", "chain": "input", "handle": 5,
                      "comment": "banger fence:banger0", "expr": [{"drop": null}]}},
            {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 6,
                      "comment": "banger fence:old0", "expr": [{"drop": null}]}},
            {"rule": {"family": "inet", "table": "banger", "chain": "input", "handle": 7,
                      "comment": "banger host fence", "expr": [{"drop": null}]}}
        ]}))
        .expect("parses");
        assert_eq!(
            fence_rule_handles(&listed, "banger0"),
            vec![("input".to_string(), 5), ("input".to_string(), 7)]
        );
        assert_eq!(
            fence_rule_handles(&listed, "old0"),
            vec![("forward".to_string(), 6), ("input".to_string(), 7)]
        );
    }

    #[test]
    fn stale_rules_are_deleted_by_handle_before_new_ones() {
        let value = batch_json(&[("postrouting".into(), 4)]);
        let deletes = rules_of(&value, "delete");
        // The VM's stale rule, then the bridge's old fence rule.
        assert_eq!(deletes.len(), 2);
        assert_eq!(deletes[0]["handle"], 4);
        assert_eq!(deletes[0]["chain"], "postrouting");
        let first_add = commands(&value)
            .iter()
            .position(|c| c["add"].get("rule").is_some())
            .expect("adds rules");
        let last_delete = commands(&value)
            .iter()
            .rposition(|c| c.get("delete").is_some())
            .expect("deletes rules");
        assert!(last_delete < first_add);
    }

    #[test]
    fn rules_are_found_by_their_comment() {
        let listed: Nftables<'static> = serde_json::from_value(json!({"nftables": [
            {"metainfo": {"version": "1.0.6", "release_name": "x", "json_schema_version": 1}},
            {"table": {"family": "inet", "name": "banger", "handle": 1}},
            {"rule": {"family": "inet", "table": "banger", "chain": "postrouting", "handle": 5,
                      "comment": "banger:vm1", "expr": [{"masquerade": null}]}},
            {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 6,
                      "comment": "banger:vm2", "expr": [{"accept": null}]}},
            {"rule": {"family": "inet", "table": "banger", "chain": "forward", "handle": 8,
                      "comment": "someone else", "expr": [{"accept": null}]}}
        ]}))
        .expect("parses");
        assert_eq!(
            vm_rule_handles(&listed, "vm1"),
            vec![("postrouting".to_string(), 5)]
        );
        assert!(vm_rule_handles(&listed, "vm3").is_empty());
        let owners: Vec<&str> = rules(&listed).filter_map(rule_owner).collect();
        assert_eq!(owners, vec!["vm1", "vm2"]);
    }
}
