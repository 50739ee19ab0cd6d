//! The kubernetes tier of each pod of a node, as its agent last compiled
//! it, kept where the plugin's ADD finds it before the pod's links come up,
//! so that a pod a NetworkPolicy selects meets it from its first packet.
//!
//! One JSON file per pod UID in `<ipam dataDir>/.kubernetes/` (the
//! directory both already share through the conflist the agent writes;
//! no CNI network name starts with a dot, so no lease directory is ever
//! called that). The agent writes each file whole (a temp file renamed
//! over it) and removes those of pods it no longer lists, under the pin
//! path's exclusive lock; ADD reads its pod's under the shared lock it
//! holds, so it sees the agent's last write or the one before.

use std::{
    io,
    path::{Path, PathBuf},
};

use podmeter_ebpf::policy::kubernetes::KubePodPolicy;
use serde::{Deserialize, Serialize};

/// The directory under the IPAM's `dataDir`.
pub const DIR: &str = ".kubernetes";

/// One pod's file: whose tier it is, and the tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodTier {
    pub namespace: String,
    pub name: String,
    pub policy: KubePodPolicy,
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(DIR)
}

/// The file of the pod `uid`; `None` for a uid that is no plain file name
/// (Kubernetes' are UUIDs).
pub fn file(data_dir: &Path, uid: &str) -> Option<PathBuf> {
    let plain = !uid.is_empty()
        && uid.len() <= 63
        && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    plain.then(|| dir(data_dir).join(format!("{uid}.json")))
}

/// The tier the agent compiled for the pod `namespace/name` of `uid`;
/// `None` if it wrote none (no agent, or the pod is new to it), or wrote
/// it for another pod of that uid.
pub fn read(
    data_dir: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
) -> io::Result<Option<KubePodPolicy>> {
    let Some(path) = file(data_dir, uid) else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let tier: PodTier =
        serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((tier.namespace == namespace && tier.name == name).then_some(tier.policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_uids_name_a_file() {
        let d = Path::new("/d");
        assert_eq!(
            file(d, "0b5c-11ef"),
            Some(PathBuf::from("/d/.kubernetes/0b5c-11ef.json"))
        );
        for bad in ["", "../x", "a/b", ".hidden", "a.json"] {
            assert_eq!(file(d, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tier_is_read_back_for_its_pod_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir(d.path())).unwrap();
        let tier = PodTier {
            namespace: "x".into(),
            name: "a".into(),
            policy: KubePodPolicy {
                isolated: [true, false],
                rules: vec![],
            },
        };
        let path = file(d.path(), "u1").unwrap();
        std::fs::write(&path, serde_json::to_vec(&tier).unwrap()).unwrap();
        let got = read(d.path(), "x", "a", "u1").unwrap();
        assert_eq!(got, Some(tier.policy));
        assert_eq!(read(d.path(), "x", "b", "u1").unwrap(), None);
        assert_eq!(read(d.path(), "x", "a", "u2").unwrap(), None);
    }
}
