//! Names of the kernel's drop reasons (`enum skb_drop_reason`), read from the
//! running kernel's BTF: the values differ between kernel versions, so they
//! cannot be compiled in. One type for every reader (the plugin's loader,
//! the exporter, `podmeterctl`, the tests).

use std::{collections::HashMap, path::Path};

use btf_rs::{Btf, Type};

use crate::{
    abi::{DROP_POLICY_DENIED, DROP_SPOOFED_SOURCE, DROP_UNPARSABLE},
    Error,
};

/// The name of podmeter's own drop reason: packets a pod's policy denied.
pub const POLICY_DENIED: &str = "POLICY_DENIED";
/// Packets a pod sent as someone else (source validation).
pub const SPOOFED_SOURCE: &str = "SPOOFED_SOURCE";
/// Packets that could not be classified to their end.
pub const UNPARSABLE: &str = "UNPARSABLE";

/// podmeter's own drop reasons, beyond any kernel's `enum skb_drop_reason`.
pub const OWN: [(u32, &str); 3] = [
    (DROP_POLICY_DENIED, POLICY_DENIED),
    (DROP_SPOOFED_SOURCE, SPOOFED_SOURCE),
    (DROP_UNPARSABLE, UNPARSABLE),
];

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const ENUM_NAME: &str = "skb_drop_reason";
const PREFIX: &str = "SKB_DROP_REASON_";

/// `reason value → name` (e.g. `2 → "NO_SOCKET"`, prefix stripped). Empty
/// when the kernel's BTF could not be read: reasons are then shown as numbers.
#[derive(Debug, Clone, Default)]
pub struct DropReasons(HashMap<u32, String>);

impl DropReasons {
    /// The running kernel's reasons.
    pub fn of_running_kernel() -> Result<Self, Error> {
        Self::from_btf(Path::new(VMLINUX_BTF))
    }

    /// The reasons of the kernel whose BTF is at `path`.
    pub fn from_btf(path: &Path) -> Result<Self, Error> {
        let err = |e: &dyn std::fmt::Display| Error::Btf(format!("{}: {e}", path.display()));
        let btf = Btf::from_file(path).map_err(|e| err(&e))?;
        let types = btf.resolve_types_by_name(ENUM_NAME).map_err(|e| err(&e))?;
        let Some(Type::Enum(e)) = types.into_iter().find(|t| matches!(t, Type::Enum(_))) else {
            return Err(err(&format!("no enum {ENUM_NAME}")));
        };
        let names = e
            .members
            .iter()
            .map(|m| {
                let name = btf.resolve_name(m).map_err(|e| err(&e))?;
                Ok((m.val(), name.trim_start_matches(PREFIX).to_owned()))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self(names))
    }

    /// The name of `reason` (see [`OWN`] for podmeter's own), or its
    /// number if the kernel did not name it.
    pub fn name(&self, reason: u32) -> String {
        if let Some((_, name)) = OWN.iter().find(|(v, _)| *v == reason) {
            return (*name).to_owned();
        }
        self.0
            .get(&reason)
            .cloned()
            .unwrap_or_else(|| reason.to_string())
    }

    /// The value named `name`, if the kernel (or podmeter) has it.
    pub fn value(&self, name: &str) -> Option<u32> {
        if let Some((value, _)) = OWN.iter().find(|(_, n)| *n == name) {
            return Some(*value);
        }
        self.iter().find_map(|(v, n)| (n == name).then_some(v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &str)> {
        self.0.iter().map(|(v, n)| (*v, n.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_names_its_drop_reasons() {
        let reasons = DropReasons::of_running_kernel().unwrap();
        // With the names the loader's bitmaps pick (loader.rs).
        for expected in [
            "NOT_SPECIFIED",
            "NO_SOCKET",
            "TCP_CSUM",
            "QDISC_DROP",
            "CPU_BACKLOG",
            "DEV_READY",
            "PACKET_SOCK_ERROR",
        ] {
            let value = reasons.value(expected).expect(expected);
            assert_eq!(reasons.name(value), expected);
        }
        assert_eq!(reasons.name(u32::MAX), u32::MAX.to_string());
        assert_eq!(reasons.name(DROP_POLICY_DENIED), POLICY_DENIED);
        assert_eq!(reasons.value(POLICY_DENIED), Some(DROP_POLICY_DENIED));
        assert_eq!(reasons.name(DROP_SPOOFED_SOURCE), SPOOFED_SOURCE);
        assert_eq!(reasons.value(UNPARSABLE), Some(DROP_UNPARSABLE));
        assert_eq!(reasons.value("TC_INGRESS").map(|v| v < 256), Some(true));
    }

    #[test]
    fn garbage_is_not_btf() {
        let file = std::env::temp_dir().join(format!("pm-not-btf-{}", std::process::id()));
        std::fs::write(&file, b"not btf at all, not even close").unwrap();
        let got = DropReasons::from_btf(&file);
        std::fs::remove_file(&file).unwrap();
        assert!(matches!(got, Err(Error::Btf(_))), "{got:?}");
        assert!(DropReasons::from_btf(Path::new("/nonexistent")).is_err());
    }
}
