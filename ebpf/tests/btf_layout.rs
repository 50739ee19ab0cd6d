//! The Rust mirrors in `abi.rs` and the map specs in `object.rs` must match
//! the compiled object exactly: sizes and field offsets from its BTF, map
//! types and sizes from its map definitions. No root needed.

use std::mem::{offset_of, size_of};

use aya::maps::MapType;
use aya_obj::maps::PinningType;
use btf_rs::{Btf, Type};
use object::{Object, ObjectSection};
use podmeter_ebpf::{
    abi::{
        CounterKey, Dev, DevKey, DropKey, Flow, FlowKey, FlowState, IpEntry, K8sPolicyName,
        K8sRule, K8sRuleKeyData, Peer, PeerKeyData, PodCounter, PodInfo, PolicyEntry, RuleEntry,
        RuleKeyData, RuleSet, Source, Tcp, FLOWS_PER_POD,
    },
    maps::flow_tables::FLOW_TABLE_FLAGS,
    pins::FLOW_TABLES_MAP,
    programs::object::{MAPS, OBJECT, PROGRAMS, TRACERS},
};

fn btf() -> Btf {
    let elf = object::File::parse(OBJECT).expect("the embedded object is ELF");
    let section = elf
        .section_by_name(".BTF")
        .expect("object has .BTF (built with -g)");
    Btf::from_bytes(section.data().unwrap()).expect("valid BTF")
}

/// `(size, [(field, byte offset)])` of the C struct `name`, from BTF.
fn c_layout(btf: &Btf, name: &str) -> (usize, Vec<(String, usize)>) {
    let types = btf.resolve_types_by_name(name).unwrap();
    let s = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("struct {name} not in BTF"));
    let fields = s
        .members
        .iter()
        .map(|m| {
            assert_eq!(m.bit_offset() % 8, 0, "{name}: bitfields are not mirrored");
            (btf.resolve_name(m).unwrap(), m.bit_offset() as usize / 8)
        })
        .collect();
    (s.size(), fields)
}

macro_rules! rust_layout {
    ($t:ty { $($f:ident),* $(,)? }) => {
        (size_of::<$t>(), vec![$((stringify!($f).to_owned(), offset_of!($t, $f))),*])
    };
}

#[test]
fn rust_mirrors_match_btf() {
    let btf = btf();
    let cases = [
        (
            "pm_counter_key",
            rust_layout!(CounterKey { ifindex, direction }),
        ),
        ("pm_counter", rust_layout!(PodCounter { packets, bytes })),
        (
            "pm_ip",
            rust_layout!(IpEntry {
                family,
                prefix_len,
                pad,
                addr
            }),
        ),
        (
            "pm_drop_key",
            rust_layout!(DropKey {
                ifindex,
                direction,
                reason,
                pad
            }),
        ),
        (
            "pm_dev_key",
            rust_layout!(DevKey {
                netns_cookie,
                ifindex,
                pad
            }),
        ),
        ("pm_dev", rust_layout!(Dev { host_ifindex, side })),
        (
            "pm_tcp",
            rust_layout!(Tcp {
                retransmits,
                resets_sent,
                active_opens,
                passive_opens,
                established,
                rtt_count,
                rtt_sum_us,
                rtt_buckets
            }),
        ),
        (
            "pm_pod_info",
            rust_layout!(PodInfo {
                k8s_namespace,
                k8s_pod,
                k8s_uid,
                container_id,
                network,
                ifname,
                host_ifname,
                ips,
                n_ips,
                flags,
            }),
        ),
        (
            "pm_source",
            rust_layout!(Source {
                mac,
                pad,
                link_local,
                ips,
                gateways
            }),
        ),
        (
            "pm_policy",
            rust_layout!(PolicyEntry {
                default_action,
                k8s_isolated,
                generation,
                owner_default,
                pad
            }),
        ),
        (
            "pm_rule",
            rust_layout!(RuleEntry {
                id,
                proto,
                action,
                flags,
                owner,
                port_lo,
                port_hi
            }),
        ),
        (
            "pm_rule_set",
            rust_layout!(RuleSet {
                prefix_len,
                n_rules,
                rules
            }),
        ),
        (
            "pm_peer",
            rust_layout!(Peer {
                pod_identity,
                cidr_identity
            }),
        ),
        ("pm_k8s_rule", rust_layout!(K8sRule { policy })),
        ("pm_k8s_policy_name", rust_layout!(K8sPolicyName { name })),
        (
            "pm_flow_key",
            rust_layout!(FlowKey {
                ifindex,
                family,
                proto,
                pod_port,
                remote_port,
                pad,
                remote
            }),
        ),
        (
            "pm_flow",
            rust_layout!(Flow {
                last_seen_ns,
                opened_by,
                generation
            }),
        ),
        (
            "pm_flow_state",
            rust_layout!(FlowState {
                flows,
                refused,
                reclaimed,
                swept_ns,
                allowed,
                denied
            }),
        ),
    ];
    for (name, rust) in cases {
        assert_eq!(c_layout(&btf, name), rust, "layout of struct {name}");
    }
}

/// `(size, fields)` of an LPM trie key struct, checked to be aya's
/// `lpm_trie::Key<T>`: the prefix length, then the mirror `T`'s fields.
fn assert_lpm_key(name: &str, (data_size, data_fields): (usize, Vec<(String, usize)>)) {
    let (size, fields) = c_layout(&btf(), name);
    let prefix = size_of::<u32>();
    assert_eq!(size, prefix + data_size, "size of struct {name}");
    assert_eq!(fields[0], ("prefixlen".to_owned(), 0), "struct {name}");
    let shifted: Vec<_> = data_fields
        .into_iter()
        .map(|(name, offset)| (name, offset + prefix))
        .collect();
    assert_eq!(fields[1..], shifted[..], "fields of struct {name}");
}

#[test]
fn trie_keys_are_a_prefix_length_and_the_mirror() {
    assert_lpm_key(
        "pm_rule_key",
        rust_layout!(RuleKeyData {
            ifindex,
            direction,
            family,
            pad,
            addr
        }),
    );
    assert_lpm_key(
        "pm_peer_key",
        rust_layout!(PeerKeyData { family, pad, addr }),
    );
    assert_lpm_key(
        "pm_k8s_rule_key",
        rust_layout!(K8sRuleKeyData {
            ifindex,
            direction,
            proto,
            pad,
            identity,
            port,
            pad2
        }),
    );
}

#[test]
fn map_specs_match_the_object() {
    let obj = aya_obj::Object::parse(OBJECT).unwrap();
    // `.rodata` and friends hold globals, and pm_denied is the programs'
    // own scratch: neither is pinned.
    let mut declared: Vec<&str> = obj
        .maps
        .iter()
        .filter(|(_, map)| map.pinning() == PinningType::ByName)
        .map(|(name, _)| name.as_str())
        .collect();
    declared.sort_unstable();
    let mut specified: Vec<&str> = MAPS.iter().map(|m| m.name).collect();
    specified.sort_unstable();
    assert_eq!(declared, specified, "maps in the object");
    for spec in MAPS {
        let map = obj
            .maps
            .get(spec.name)
            .unwrap_or_else(|| panic!("{} missing", spec.name));
        assert_eq!(map.map_type(), spec.map_type as u32, "{} type", spec.name);
        assert_eq!(map.key_size(), spec.key_size, "{} key size", spec.name);
        assert_eq!(
            map.value_size(),
            spec.value_size,
            "{} value size",
            spec.name
        );
        assert_eq!(
            map.max_entries(),
            spec.max_entries,
            "{} max entries",
            spec.name
        );
    }
    // Userspace makes every pod's flow table as the object's template is.
    let inner = obj.maps[FLOW_TABLES_MAP]
        .inner()
        .expect("pm_flow_tables has an inner map template");
    assert_eq!(
        (
            inner.map_type(),
            inner.key_size(),
            inner.value_size(),
            inner.max_entries(),
            inner.map_flags()
        ),
        (
            MapType::Hash as u32,
            size_of::<FlowKey>() as u32,
            size_of::<Flow>() as u32,
            FLOWS_PER_POD,
            FLOW_TABLE_FLAGS
        ),
        "pm_flow_tables' inner map"
    );
    for name in PROGRAMS
        .iter()
        .map(|p| p.name)
        .chain(TRACERS.iter().map(|t| t.name))
    {
        assert!(obj.programs.contains_key(name), "program {name} missing");
    }
}
