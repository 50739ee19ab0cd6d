//! What the node's kernel must offer, checked before anything is loaded: on
//! a kernel that lacks a feature the verifier's refusal ("unknown func
//! bpf_loop#181") names neither the feature nor the version that has it, and
//! every pod sandbox fails with it. The plugin's STATUS and ADD and the
//! agent's readiness report these messages instead.
//!
//! The probes read files only (the release, BTF, `br_netfilter`'s sysctls),
//! all under one root: `/`, or in debug builds `PODMETER_TEST_PROBE_ROOT`,
//! so that tests can show the messages of a kernel this machine is not.

use std::path::{Path, PathBuf};

/// The oldest kernel podmeter's programs load on.
pub const FLOOR: Release = Release(5, 17);

/// Environment variable naming the probes' root (debug builds only).
pub const TEST_PROBE_ROOT_ENV: &str = "PODMETER_TEST_PROBE_ROOT";

const OSRELEASE: &str = "proc/sys/kernel/osrelease";
const BTF: &str = "sys/kernel/btf/vmlinux";
/// br_netfilter registers `net.bridge.*` in every netns when it is active
/// (loaded, or built in): the directory is there exactly then.
const BR_NETFILTER_SYSCTLS: &str = "proc/sys/net/bridge";

/// What the programs use, and the release that brought it.
const FEATURES: [(&str, Release); 2] = [
    ("bpf_loop (the policy's prefix walk)", Release(5, 17)),
    ("the kfree_skb tracepoint's drop reason", Release(5, 17)),
];

/// A kernel release, major and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32);

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl Release {
    /// "6.1.0-27-amd64" → 6.1.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self(major, minor))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Missing {
    #[error(
        "Linux {release} lacks {feature}, which came with Linux {needs}: podmeter needs Linux {FLOOR} or later"
    )]
    TooOld {
        release: String,
        feature: &'static str,
        needs: Release,
    },
    #[error(
        "the kernel has no BTF ({path} is missing): the drop tracer's tp_btf program needs a kernel built with CONFIG_DEBUG_INFO_BTF (every major distribution's since Linux 5.x)"
    )]
    Btf { path: String },
    #[error("cannot read the kernel release from {path}: {reason}")]
    Release { path: String, reason: String },
    #[error(
        "the kernel's br_netfilter is not active ({path} is missing): without it kube-proxy never sees a same-node Service's reply and cannot un-NAT it; load it on the host (modprobe br_netfilter, and br_netfilter in /etc/modules-load.d/; kind nodes share the host's kernel and cannot load it themselves)"
    )]
    BrNetfilter { path: String },
}

/// The probes' view of the node: `/` in production.
#[derive(Debug, Clone)]
pub struct Probe {
    root: PathBuf,
}

impl Default for Probe {
    fn default() -> Self {
        Self::at(test_root().unwrap_or_else(|| PathBuf::from("/")))
    }
}

#[cfg(debug_assertions)]
fn test_root() -> Option<PathBuf> {
    std::env::var_os(TEST_PROBE_ROOT_ENV).map(PathBuf::from)
}

#[cfg(not(debug_assertions))]
fn test_root() -> Option<PathBuf> {
    None
}

impl Probe {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The running kernel's release, as `uname -r` prints it.
    pub fn release(&self) -> Result<(String, Release), Missing> {
        let path = self.path(OSRELEASE);
        let failed = |reason: String| Missing::Release {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| failed(e.to_string()))?;
        let text = text.trim().to_owned();
        let release = Release::parse(&text).ok_or_else(|| failed(format!("{text:?}")))?;
        Ok((text, release))
    }

    /// Everything the programs need: the release's features, then BTF.
    pub fn programs(&self) -> Result<(), Missing> {
        let (text, release) = self.release()?;
        if let Some((feature, needs)) = FEATURES.iter().find(|(_, needs)| release < *needs) {
            return Err(Missing::TooOld {
                release: text,
                feature,
                needs: *needs,
            });
        }
        exists(&self.path(BTF)).ok_or_else(|| Missing::Btf {
            path: format!("/{BTF}"),
        })
    }

    /// `br_netfilter`, in the calling thread's network namespace.
    pub fn br_netfilter(&self) -> Result<(), Missing> {
        exists(&self.path(BR_NETFILTER_SYSCTLS)).ok_or_else(|| Missing::BrNetfilter {
            path: format!("/{BR_NETFILTER_SYSCTLS}"),
        })
    }
}

fn exists(path: &Path) -> Option<()> {
    path.exists().then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(release: &str, btf: bool, bridge: bool) -> (tempfile::TempDir, Probe) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::write(root.join(OSRELEASE), format!("{release}\n")).unwrap();
        if btf {
            std::fs::create_dir_all(root.join("sys/kernel/btf")).unwrap();
            std::fs::write(root.join(BTF), "").unwrap();
        }
        if bridge {
            std::fs::create_dir_all(root.join(BR_NETFILTER_SYSCTLS)).unwrap();
        }
        let probe = Probe::at(root);
        (dir, probe)
    }

    #[test]
    fn releases_parse_as_uname_prints_them() {
        assert_eq!(Release::parse("6.1.0-27-amd64"), Some(Release(6, 1)));
        assert_eq!(Release::parse("5.15.0-91-generic\n"), Some(Release(5, 15)));
        assert_eq!(Release::parse("6.18"), Some(Release(6, 18)));
        assert_eq!(Release::parse("garbage"), None);
        assert!(Release(5, 17) > Release(5, 9));
    }

    #[test]
    fn an_old_kernel_is_named_with_the_feature_and_its_version() {
        let (_d, probe) = fake("5.15.0-91-generic", true, true);
        let err = probe.programs().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Linux 5.15.0-91-generic lacks bpf_loop (the policy's prefix walk), which came with Linux 5.17: podmeter needs Linux 5.17 or later"
        );
        let (_d, probe) = fake("5.17.0", true, true);
        assert_eq!(probe.programs(), Ok(()));
    }

    #[test]
    fn no_btf_and_no_br_netfilter_are_named() {
        let (_d, probe) = fake("6.1.0-27-amd64", false, false);
        let btf = probe.programs().unwrap_err().to_string();
        assert!(btf.contains("no BTF (/sys/kernel/btf/vmlinux"), "{btf}");
        let br = probe.br_netfilter().unwrap_err().to_string();
        assert!(br.contains("br_netfilter is not active"), "{br}");
        assert!(br.contains("modprobe br_netfilter"), "{br}");
    }

    #[test]
    fn this_kernel_passes() {
        // The machine the tests run on has everything (6.18, BTF, br_netfilter built in).
        let probe = Probe::at("/");
        assert_eq!(probe.programs(), Ok(()));
    }
}
