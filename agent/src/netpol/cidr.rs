//! ipBlocks flattened into regions that the longest matching prefix decides,
//! as one LPM trie (`pm_peers`) can answer: every block's CIDR and every
//! `except` is a prefix, and an address belongs to exactly the blocks that
//! contain its longest matching prefix and whose excepts do not. So each
//! prefix carries a *signature* (the set of blocks its addresses are in),
//! and prefixes of one signature share one region identity. An `except` is
//! a hole in its own block only: another block covering it still counts.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;

/// One ipBlock, normalised: host bits cleared, excepts outside the CIDR
/// dropped (the API refuses them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Block {
    pub cidr: IpNet,
    pub except: BTreeSet<IpNet>,
}

impl Block {
    /// `None` for text that is no CIDR, in the block or in one of its
    /// excepts (the API refuses both): a block whose hole cannot be read
    /// matches nothing rather than everything around the hole.
    pub fn parse(cidr: &str, except: &[String]) -> Option<Self> {
        let cidr = cidr.parse::<IpNet>().ok()?.trunc();
        let mut holes = BTreeSet::new();
        for e in except {
            let e = e.parse::<IpNet>().ok()?.trunc();
            if cidr.contains(&e) {
                holes.insert(e);
            }
        }
        Some(Self {
            cidr,
            except: holes,
        })
    }

    fn covers(&self, prefix: &IpNet) -> bool {
        self.cidr.contains(prefix) && !self.except.iter().any(|e| e.contains(prefix))
    }
}

/// The blocks an address is in: what a region is named by.
pub type Signature = BTreeSet<Block>;

/// Every block's prefixes, each with its signature (possibly empty: a hole
/// that no other block covers).
#[derive(Debug, Default)]
pub struct Regions {
    prefixes: HashMap<IpNet, Signature>,
    /// The prefix lengths in use, longest first, per family (v4, v6): an
    /// address is looked up at these only.
    lengths: [Vec<u8>; 2],
}

impl Regions {
    pub fn new<'a>(blocks: impl IntoIterator<Item = &'a Block>) -> Self {
        let blocks: BTreeSet<&Block> = blocks.into_iter().collect();
        let mut prefixes = HashMap::new();
        for b in &blocks {
            for p in std::iter::once(&b.cidr).chain(&b.except) {
                prefixes.entry(*p).or_insert_with(|| {
                    blocks
                        .iter()
                        .filter(|b| b.covers(p))
                        .map(|b| (*b).clone())
                        .collect()
                });
            }
        }
        let mut lengths = [BTreeSet::new(), BTreeSet::new()];
        for p in prefixes.keys() {
            lengths[usize::from(matches!(p, IpNet::V6(_)))].insert(p.prefix_len());
        }
        let lengths = lengths.map(|l| l.into_iter().rev().collect());
        Self { prefixes, lengths }
    }

    /// Every prefix and its signature, sorted by prefix.
    pub fn prefixes(&self) -> BTreeMap<IpNet, &Signature> {
        self.prefixes.iter().map(|(p, s)| (*p, s)).collect()
    }

    /// The signature of the longest prefix holding `addr`, if any does.
    pub fn signature(&self, addr: IpAddr) -> Option<&Signature> {
        self.lengths[usize::from(addr.is_ipv6())]
            .iter()
            .find_map(|len| {
                let net = IpNet::new(addr, *len).ok()?.trunc();
                self.prefixes.get(&net)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str, except: &[&str]) -> Block {
        let except: Vec<String> = except.iter().map(|s| (*s).to_owned()).collect();
        Block::parse(cidr, &except).unwrap()
    }

    fn sig(r: &Regions, addr: &str) -> Vec<IpNet> {
        r.signature(addr.parse().unwrap())
            .map(|s| s.iter().map(|b| b.cidr).collect())
            .unwrap_or_default()
    }

    #[test]
    fn an_unreadable_except_fails_the_block_closed() {
        let except = ["10.1.0.0/16".to_owned(), "10.2.0.0/33".to_owned()];
        assert_eq!(Block::parse("10.0.0.0/8", &except), None);
        assert_eq!(
            Block::parse("10.0.0.0/8", &except[..1])
                .unwrap()
                .except
                .len(),
            1
        );
    }

    #[test]
    fn an_except_is_a_hole_in_its_own_block_only() {
        let wide = block("10.0.0.0/8", &["10.1.0.0/16"]);
        let narrow = block("10.1.2.0/24", &[]);
        let r = Regions::new([&wide, &narrow]);
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(sig(&r, "10.9.0.1"), [net("10.0.0.0/8")]);
        assert_eq!(sig(&r, "10.1.9.1"), Vec::<IpNet>::new());
        // In wide's hole, but narrow covers it.
        assert_eq!(sig(&r, "10.1.2.3"), [net("10.1.2.0/24")]);
        assert_eq!(sig(&r, "11.0.0.1"), Vec::<IpNet>::new());
        assert!(r.signature("11.0.0.1".parse().unwrap()).is_none());
        assert_eq!(r.prefixes().len(), 3);
    }

    #[test]
    fn host_bits_are_cleared_and_foreign_excepts_dropped() {
        let b = block("fd00::5/64", &["fd01::/64", "fd00::/80"]);
        assert_eq!(b.cidr, "fd00::/64".parse::<IpNet>().unwrap());
        assert_eq!(b.except.len(), 1);
        assert!(Block::parse("nonsense", &[]).is_none());
    }
}
