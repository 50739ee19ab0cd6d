//! `ipMasq`: source NAT for traffic from a pod to outside its subnets, via
//! nftables (`nft`), one tagged rule set per attachment so DEL and GC remove
//! exactly their own rules. Rules live in the netns the plugin runs in.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::error::PluginError;

const TABLE: &str = "podmeter";
const CHAIN: &str = "postrouting";

/// The comment tagging an attachment's rules: short (nft comments are
/// limited to 128 bytes) and stable across ADD, DEL and GC.
fn tag(network: &str, container_id: &str, ifname: &str) -> String {
    let digest = Sha256::digest(format!("{network}\0{container_id}\0{ifname}"));
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("podmeter-{hex}")
}

/// Masquerades what each of `addrs` sends outside its subnet (multicast
/// excepted, as the reference plugins do).
pub fn add(
    network: &str,
    container_id: &str,
    ifname: &str,
    addrs: &[IpNet],
) -> Result<(), PluginError> {
    let tag = tag(network, container_id, ifname);
    let mut script = format!(
        "table inet {TABLE} {{\n  chain {CHAIN} {{\n    type nat hook postrouting priority srcnat; policy accept;\n  }}\n}}\n"
    );
    for a in addrs {
        let (fam, mcast) = if a.addr().is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        script.push_str(&format!(
            "add rule inet {TABLE} {CHAIN} {fam} saddr {} {fam} daddr != {} {fam} daddr != {mcast} masquerade comment \"{tag}\"\n",
            a.addr(),
            a.trunc()
        ));
    }
    nft(&["-f", "-"], Some(&script)).map(drop)
}

/// Removes the attachment's rules; none present is success.
pub fn del(network: &str, container_id: &str, ifname: &str) -> Result<(), PluginError> {
    let tag = tag(network, container_id, ifname);
    let Ok(listing) = nft(&["-j", "-a", "list", "chain", "inet", TABLE, CHAIN], None) else {
        return Ok(()); // no table or chain: nothing of ours is there
    };
    let json: serde_json::Value = serde_json::from_str(&listing)
        .map_err(|e| PluginError::Masq(format!("parsing `nft -j` output: {e}")))?;
    let handles = json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("rule"))
        .filter(|rule| rule["comment"] == tag.as_str())
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

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, PluginError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| PluginError::Masq(format!("running nft: {e} (is nftables installed?)")))?;
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(script.as_bytes())
            .map_err(|e| PluginError::Masq(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| PluginError::Masq(format!("running nft: {e}")))?;
    if !out.status.success() {
        return Err(PluginError::Masq(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_short_and_distinct() {
        let a = tag("net", "c1", "eth0");
        assert_eq!(a, tag("net", "c1", "eth0"));
        assert_ne!(a, tag("net", "c1", "eth1"));
        assert_ne!(a, tag("net2", "c1", "eth0"));
        assert!(a.len() < 128);
    }
}
