//! nftables counters inside a namespace: the kernel's own count of the
//! packets a pod sent (`output`) or that reached its stack (`input`) and
//! match a rule, to see what got through without trusting podmeter's.

use serde_json::Value;

use crate::NetNs;

/// One counting rule in a chain of its own in table `inet pmtest`.
pub struct NftCounter<'a> {
    ns: &'a NetNs,
    chain: String,
}

impl<'a> NftCounter<'a> {
    /// Counts packets at `hook` (`input`, `output`...) matching `rule`
    /// (e.g. `tcp dport 8080`); `chain` names it, unique within the ns.
    pub fn new(ns: &'a NetNs, chain: &str, hook: &str, rule: &str) -> Self {
        ns.exec(&["nft", "add", "table", "inet", "pmtest"]);
        ns.exec(&[
            "nft",
            &format!("add chain inet pmtest {chain} {{ type filter hook {hook} priority 0 ; }}"),
        ]);
        ns.exec(&[
            "nft",
            &format!("add rule inet pmtest {chain} {rule} counter"),
        ]);
        Self {
            ns,
            chain: chain.to_owned(),
        }
    }

    /// (packets, bytes); bytes from the IP header on, as nft counts.
    pub fn read(&self) -> (u64, u64) {
        let out = self
            .ns
            .exec(&["nft", "-j", "list", "chain", "inet", "pmtest", &self.chain]);
        let json: Value = serde_json::from_str(&out).unwrap();
        let counter = json["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["rule"]["expr"].as_array())
            .flatten()
            .find_map(|e| e.get("counter"))
            .expect("the counter rule")
            .clone();
        (
            counter["packets"].as_u64().unwrap(),
            counter["bytes"].as_u64().unwrap(),
        )
    }

    pub fn packets(&self) -> u64 {
        self.read().0
    }
}
