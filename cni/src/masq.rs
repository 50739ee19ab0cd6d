//! `ipMasq`: source NAT for traffic from a pod to outside its subnets, via
//! nftables (`nft`), one tagged rule set per attachment so DEL and GC remove
//! exactly their own rules. Rules live in the netns the plugin runs in.

use std::{collections::HashSet, os::unix::fs::PermissionsExt, process::Command, time::Duration};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::{child, error::PluginError, net::names::hex};

const TABLE: &str = "podmeter";
const CHAIN: &str = "postrouting";

/// nft keeps at most 128 bytes of a comment.
const MAX_COMMENT: usize = 127;

/// How an attachment's rules are tagged: by hashes of the network and of the
/// attachment, so DEL finds exactly its own rules and GC every rule of a
/// network whose attachment is gone, even with no registry entry left.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Tag {
    network: String,
    attachment: String,
}

impl Tag {
    fn new(network: &str, container_id: &str, ifname: &str) -> Self {
        Self {
            network: network_hash(network),
            attachment: short_hash(&format!("{network}\0{container_id}\0{ifname}")),
        }
    }

    /// The rule comment: the two hashes, then (for people, possibly cut
    /// short) the network and the attachment.
    fn comment(&self, network: &str, container_id: &str, ifname: &str) -> String {
        let mut c = format!(
            "podmeter {} {} {network}/{container_id}/{ifname}",
            self.network, self.attachment
        );
        if c.len() > MAX_COMMENT {
            let cut = (0..=MAX_COMMENT).rev().find(|&i| c.is_char_boundary(i));
            c.truncate(cut.unwrap_or(0));
        }
        c
    }

    fn parse(comment: &str) -> Option<Self> {
        let mut words = comment.split(' ');
        (words.next()? == "podmeter").then_some(())?;
        Some(Self {
            network: words.next()?.to_owned(),
            attachment: words.next()?.to_owned(),
        })
    }
}

fn network_hash(network: &str) -> String {
    short_hash(network)
}

fn short_hash(s: &str) -> String {
    hex(&Sha256::digest(s)[..8], "")
}

/// Masquerades what each of `addrs` sends outside its subnet and outside
/// `cluster` (the cluster's pod ranges, routed between nodes; multicast
/// excepted, as the reference plugins do).
pub fn add(
    network: &str,
    container_id: &str,
    ifname: &str,
    addrs: &[IpNet],
    cluster: &[IpNet],
) -> Result<(), PluginError> {
    let comment = Tag::new(network, container_id, ifname).comment(network, container_id, ifname);
    let mut script = format!(
        "table inet {TABLE} {{\n  chain {CHAIN} {{\n    type nat hook postrouting priority srcnat; policy accept;\n  }}\n}}\n"
    );
    for a in addrs {
        let (fam, mcast) = if a.addr().is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        // One `daddr !=` per range: statements of a rule must all match.
        let cluster: String = cluster
            .iter()
            .filter(|c| c.addr().is_ipv4() == a.addr().is_ipv4())
            .map(|c| format!("{fam} daddr != {c} "))
            .collect();
        script.push_str(&format!(
            "add rule inet {TABLE} {CHAIN} {fam} saddr {} {fam} daddr != {} {cluster}{fam} daddr != {mcast} masquerade comment \"{comment}\"\n",
            a.addr(),
            a.trunc()
        ));
    }
    nft(&["-f", "-"], Some(&script)).map(drop)
}

/// Removes the attachment's rules; none present is success.
pub fn del(network: &str, container_id: &str, ifname: &str) -> Result<(), PluginError> {
    let tag = Tag::new(network, container_id, ifname);
    remove_rules(|t| *t == tag)
}

/// Removes the rules of `network` whose attachment is not in `keep`
/// (`(container_id, ifname)` pairs).
pub fn gc(network: &str, keep: &[(&str, &str)]) -> Result<(), PluginError> {
    let net = network_hash(network);
    let keep: HashSet<Tag> = keep.iter().map(|(c, i)| Tag::new(network, c, i)).collect();
    remove_rules(|t| t.network == net && !keep.contains(t))
}

fn remove_rules(doomed: impl Fn(&Tag) -> bool) -> Result<(), PluginError> {
    let listing = match nft(&["-j", "-a", "list", "chain", "inet", TABLE, CHAIN], None) {
        Ok(listing) => listing,
        // No table or chain: nothing of ours is there. Any other failure
        // (nft killed, say) says nothing about our rules.
        Err(PluginError::Masq(e)) if e.contains("Error: No such file or directory") => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    let json: serde_json::Value = serde_json::from_str(&listing)
        .map_err(|e| PluginError::Masq(format!("parsing `nft -j` output: {e}")))?;
    let handles = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| {
            rule["comment"]
                .as_str()
                .and_then(Tag::parse)
                .is_some_and(|t| doomed(&t))
        })
        .filter_map(|rule| rule["handle"].as_u64());
    for handle in handles {
        nft(
            &[
                "delete",
                "rule",
                "inet",
                TABLE,
                CHAIN,
                "handle",
                &handle.to_string(),
            ],
            None,
        )?;
    }
    Ok(())
}

/// Fails unless `nft` is on `PATH`: checked before an ADD with `ipMasq`
/// creates anything, instead of failing at its last step.
pub fn check_available() -> Result<(), PluginError> {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join("nft"))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    });
    if found {
        Ok(())
    } else {
        Err(PluginError::NotAvailable(
            "ipMasq needs nftables' `nft` on PATH".into(),
        ))
    }
}

/// `nft` answers in milliseconds; one that hangs must not hang the runtime.
const NFT_LIMIT: Duration = Duration::from_secs(10);

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, PluginError> {
    let mut command = Command::new("nft");
    command.args(args);
    let what = format!("nft {}", args.join(" "));
    let out = child::run(command, stdin.unwrap_or_default().as_bytes(), NFT_LIMIT)
        .map_err(|e| PluginError::Masq(format!("{what}: {e}")))?;
    if !out.status.success() {
        return Err(PluginError::Masq(format!(
            "{what}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_distinct_and_parse_back_from_the_comment() {
        let a = Tag::new("net", "c1", "eth0");
        assert_eq!(a, Tag::new("net", "c1", "eth0"));
        assert_ne!(a, Tag::new("net", "c1", "eth1"));
        assert_ne!(a.network, Tag::new("net2", "c1", "eth0").network);
        assert_eq!(a.network, Tag::new("net", "c2", "eth0").network);
        let comment = a.comment("net", "c1", "eth0");
        assert_eq!(
            comment,
            format!("podmeter {} {} net/c1/eth0", a.network, a.attachment)
        );
        assert_eq!(Tag::parse(&comment), Some(a));
        assert_eq!(Tag::parse("someone else's rule"), None);
    }

    #[test]
    fn long_comments_are_cut_within_nft_limit_and_still_parse() {
        let (net, id) = ("n".repeat(100), "é".repeat(64));
        let tag = Tag::new(&net, &id, "eth0");
        let comment = tag.comment(&net, &id, "eth0");
        assert!(comment.len() <= MAX_COMMENT);
        assert_eq!(Tag::parse(&comment), Some(tag));
    }
}
