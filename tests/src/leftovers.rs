//! What a pod attachment leaves on a node: counted kind by kind, so a fault
//! sweep can say which kind leaked, not just that something did.
//!
//! The counts are read from the kernel and the disk (links, addresses and
//! routes by `ip`, masquerade rules by `nft`, raw map keys by aya, pins and
//! leases by directory listing), never from the plugin's own view of them.

use std::{
    collections::BTreeSet,
    fmt, fs,
    path::{Path, PathBuf},
    process::Command,
};

use aya::maps::{lpm_trie::LpmTrie, HashMap, HashOfMaps, Map, MapData, PerCpuHashMap};
use podmeter_ebpf::{
    abi::{
        CounterKey, Dev, DevKey, DropKey, FlowState, PodCounter, PodInfo, PolicyEntry, RuleKeyData,
        RuleSet, Source, Tcp,
    },
    maps::flow_tables::FlowTable,
    pins::{
        COUNTERS_MAP, DEVICES_MAP, DROPS_MAP, FLOW_STATE_MAP, FLOW_TABLES_MAP, POLICY_MAP,
        REGISTRY_MAP, RULES_MAP, SOURCES_MAP, TCP_MAP,
    },
    programs::object::TRACERS,
    PinLayout,
};
use serde_json::{json, Value};

use crate::netns::run;

/// Where one node keeps its state.
#[derive(Debug, Clone)]
pub struct Site {
    /// The node's network namespace (under `/run/netns`).
    pub netns: String,
    /// Further namespaces whose processes count as ours (pods).
    pub pod_netns: Vec<String>,
    pub pin_path: PathBuf,
    pub data_dir: PathBuf,
    pub network: String,
}

/// Everything counted, by kind. Addresses and routes are kept as text so
/// that what a healthy node keeps (the bridge's gateways and their routes)
/// can be taken away as a baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Links in the node other than loopback and bridges (veth ends).
    pub links: Vec<String>,
    pub addrs: BTreeSet<String>,
    pub routes: BTreeSet<String>,
    pub leases: Vec<String>,
    /// Pod identities and sources (who each pod may send as).
    pub registry: usize,
    /// Traffic counters (two a pod) and TCP statistics (one a pod).
    pub counters: usize,
    pub devices: usize,
    pub drops: usize,
    /// Policy entries, rule CIDRs, flow tables and their occupancy entries.
    pub policy: usize,
    /// Per-pod TCX link pins (the node-wide drop tracer's link excluded).
    pub pins: Vec<String>,
    pub nft_rules: usize,
    /// `pid comm` of processes left in the node's or a pod's namespace.
    pub processes: Vec<String>,
}

impl Leftovers {
    pub fn read(site: &Site) -> Self {
        let layout = PinLayout::new(&site.pin_path);
        Self {
            links: links(&site.netns),
            addrs: addrs(&site.netns),
            routes: routes(&site.netns),
            leases: leases(&site.data_dir.join(&site.network)),
            registry: map_keys::<HashMap<_, u32, PodInfo>>(&layout, REGISTRY_MAP)
                + map_keys::<HashMap<_, u32, Source>>(&layout, SOURCES_MAP),
            counters: map_keys::<PerCpuHashMap<_, CounterKey, PodCounter>>(&layout, COUNTERS_MAP)
                + map_keys::<PerCpuHashMap<_, u32, Tcp>>(&layout, TCP_MAP),
            devices: map_keys::<HashMap<_, DevKey, Dev>>(&layout, DEVICES_MAP),
            drops: map_keys::<PerCpuHashMap<_, DropKey, PodCounter>>(&layout, DROPS_MAP),
            policy: map_keys::<HashMap<_, u32, PolicyEntry>>(&layout, POLICY_MAP)
                + map_keys::<LpmTrie<_, RuleKeyData, RuleSet>>(&layout, RULES_MAP)
                + map_keys::<HashOfMaps<_, u32, FlowTable>>(&layout, FLOW_TABLES_MAP)
                + map_keys::<HashMap<_, u32, FlowState>>(&layout, FLOW_STATE_MAP),
            pins: link_pins(&layout),
            nft_rules: nft_rules(&site.netns),
            processes: processes(site),
        }
    }

    /// What is here beyond `baseline`'s addresses and routes (a node after
    /// a fault-free ADD, DEL and GC keeps its bridge and gateways).
    pub fn beyond(mut self, baseline: &Leftovers) -> Self {
        self.addrs = &self.addrs - &baseline.addrs;
        self.routes = &self.routes - &baseline.routes;
        self
    }

    /// One count per kind, in the order of [`Leftovers::KINDS`].
    pub fn counts(&self) -> [usize; 12] {
        [
            self.links.len(),
            self.addrs.len(),
            self.routes.len(),
            self.leases.len(),
            self.registry,
            self.counters,
            self.devices,
            self.drops,
            self.policy,
            self.pins.len(),
            self.nft_rules,
            self.processes.len(),
        ]
    }

    pub const KINDS: [&'static str; 12] = [
        "links", "addrs", "routes", "leases", "registry", "counters", "devices", "drops", "policy",
        "pins", "nft", "procs",
    ];

    pub fn is_clean(&self) -> bool {
        self.counts().iter().all(|&n| n == 0)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "links": self.links, "addrs": self.addrs, "routes": self.routes,
            "leases": self.leases, "registry": self.registry, "counters": self.counters,
            "devices": self.devices, "drops": self.drops, "policy": self.policy,
            "pins": self.pins,
            "nft": self.nft_rules, "procs": self.processes,
        })
    }

    /// The addresses and routes of a JSON dump, as a baseline for [`Leftovers::beyond`].
    pub fn baseline_from_json(v: &Value) -> Self {
        let set = |key: &str| -> BTreeSet<String> {
            serde_json::from_value(v[key].clone()).unwrap_or_default()
        };
        Self {
            addrs: set("addrs"),
            routes: set("routes"),
            ..Self::default()
        }
    }
}

impl fmt::Display for Leftovers {
    /// Only the kinds that are not empty, e.g. `counters=2 pins=[5_ingress]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let json = self.to_json();
        let mut parts = Vec::new();
        for (kind, n) in Self::KINDS.iter().zip(self.counts()) {
            if n > 0 {
                parts.push(format!("{kind}={}", json[kind]));
            }
        }
        if parts.is_empty() {
            parts.push("nothing".into());
        }
        f.write_str(&parts.join(" "))
    }
}

fn ip_json(netns: &str, args: &[&str]) -> Value {
    let out = run(Command::new("ip").args(["-n", netns, "-j"]).args(args));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn links(netns: &str) -> Vec<String> {
    items(&ip_json(netns, &["-d", "link", "show"]))
        .filter(|l| l["ifname"] != "lo" && l["linkinfo"]["info_kind"] != "bridge")
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// Link-local addresses and routes (`fe80::/64`, `ff00::/8`) are left out:
/// the kernel adds and removes them with any interface's carrier.
fn link_local(text: &str) -> bool {
    text.starts_with("fe80:") || text.starts_with("ff00:")
}

fn addrs(netns: &str) -> BTreeSet<String> {
    items(&ip_json(netns, &["addr", "show"]))
        .flat_map(|l| {
            let global =
                items(&l["addr_info"]).filter(|a| !link_local(a["local"].as_str().unwrap_or("")));
            global.map(move |a| {
                format!(
                    "{} {}/{}",
                    l["ifname"].as_str().unwrap_or("?"),
                    a["local"].as_str().unwrap_or("?"),
                    a["prefixlen"]
                )
            })
        })
        .collect()
}

/// Routes of every table and both families, without the fields that change
/// from run to run (flags such as `linkdown`).
fn routes(netns: &str) -> BTreeSet<String> {
    ["-4", "-6"]
        .iter()
        .flat_map(|family| {
            items(&ip_json(netns, &[family, "route", "show", "table", "all"]))
                .filter(|r| !link_local(r["dst"].as_str().unwrap_or("")))
                .map(|r| {
                    let field = |k: &str| r[k].as_str().unwrap_or("").to_owned();
                    format!(
                        "{} {} dev {} table {}",
                        field("type"),
                        field("dst"),
                        field("dev"),
                        r["table"].as_str().unwrap_or("main")
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Leased addresses in a built-in IPAM network directory.
pub fn leases(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut leases: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    leases.sort();
    leases
}

/// Names of the pinned per-pod TCX links (not the node-wide tracers').
pub fn link_pins(layout: &PinLayout) -> Vec<String> {
    let mut pins: Vec<String> = fs::read_dir(layout.links_dir())
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !TRACERS.iter().any(|t| t.tracepoint == n))
                .collect()
        })
        .unwrap_or_default();
    pins.sort();
    pins
}

/// Keys in a pinned map (0 if it was never pinned), read without the
/// plugin's code so an entry no registry lookup finds is still counted. A
/// map of another layout pinned under the name (an operator's mistake, or a
/// local user's before pins were root's alone) counts 0: podmeter neither
/// writes nor removes entries there.
fn map_keys<M>(layout: &PinLayout, name: &str) -> usize
where
    M: TryFrom<Map, Error = aya::maps::MapError> + MapKeyCount,
{
    let path = layout.map(name);
    if !path.exists() {
        return 0;
    }
    let data = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let map = Map::from_map_data(data).unwrap();
    M::try_from(map).map_or(0, |m| m.key_count())
}

/// The typed maps podmeter pins, whose keys can be counted.
pub trait MapKeyCount {
    fn key_count(&self) -> usize;
}

impl<K: aya::Pod, V: aya::Pod> MapKeyCount for HashMap<MapData, K, V> {
    fn key_count(&self) -> usize {
        self.keys().count()
    }
}

impl<K: aya::Pod, V: aya::Pod> MapKeyCount for LpmTrie<MapData, K, V> {
    fn key_count(&self) -> usize {
        self.keys().count()
    }
}

impl<K: aya::Pod> MapKeyCount for HashOfMaps<MapData, K, FlowTable> {
    fn key_count(&self) -> usize {
        self.keys().count()
    }
}

impl<K: aya::Pod, V: aya::Pod> MapKeyCount for PerCpuHashMap<MapData, K, V> {
    fn key_count(&self) -> usize {
        self.keys().count()
    }
}

/// Rules in podmeter's masquerade table (none if the table is absent).
fn nft_rules(netns: &str) -> usize {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["nft", "-j", "list", "table", "inet", "podmeter"])
        .output()
        .expect("run nft");
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    items(&json["nftables"])
        .filter(|i| i.get("rule").is_some())
        .count()
}

/// Processes whose network namespace is the node's or a pod's: a plugin,
/// `nft` or delegate that outlived its caller.
fn processes(site: &Site) -> Vec<String> {
    let ns_id = |path: &Path| fs::read_link(path).ok();
    let ours: BTreeSet<PathBuf> = std::iter::once(&site.netns)
        .chain(&site.pod_netns)
        .filter_map(|n| {
            use std::os::unix::fs::MetadataExt;
            let ino = fs::metadata(format!("/run/netns/{n}")).ok()?.ino();
            Some(PathBuf::from(format!("net:[{ino}]")))
        })
        .collect();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if ns_id(&entry.path().join("ns/net")).is_some_and(|id| ours.contains(&id)) {
            let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push(format!("{pid} {}", comm.trim()));
        }
    }
    found
}
