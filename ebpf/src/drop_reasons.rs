//! Names of the kernel's drop reasons (`enum skb_drop_reason`), read from the
//! running kernel's BTF: the values differ between kernel versions, so they
//! cannot be compiled in. aya-obj keeps its BTF enum accessors private, and
//! this needs only a walk over the type section.

use std::{collections::HashMap, fs, path::Path};

use crate::Error;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const ENUM_NAME: &str = "skb_drop_reason";
const PREFIX: &str = "SKB_DROP_REASON_";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// `reason value → name` (e.g. `2 → "NO_SOCKET"`, prefix stripped) of the
/// kernel whose BTF is at `path`.
pub fn drop_reasons(path: &Path) -> Result<HashMap<u32, String>, Error> {
    let data = fs::read(path).map_err(|e| Error::io("read", path, e))?;
    parse(&data).ok_or_else(|| Error::Btf(format!("{}: no enum {ENUM_NAME}", path.display())))
}

fn parse(data: &[u8]) -> Option<HashMap<u32, String>> {
    let u16_at = |off: usize| Some(u16::from_le_bytes(data.get(off..off + 2)?.try_into().ok()?));
    let u32_at = |off: usize| Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?));
    if u16_at(0)? != BTF_MAGIC {
        return None; // big-endian BTF is not something this node runs
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name = |off: u32| -> Option<&str> {
        let start = strings + off as usize;
        let end = start + data.get(start..)?.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&data[start..end]).ok()
    };

    let mut at = types;
    while at + 12 <= types + type_len {
        let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        let body = at + 12;
        if kind == KIND_ENUM && name(name_off)? == ENUM_NAME {
            return (0..vlen)
                .map(|i| {
                    let member = body + i * 8;
                    let label = name(u32_at(member)?)?;
                    Some((
                        u32_at(member + 4)?,
                        label.trim_start_matches(PREFIX).to_owned(),
                    ))
                })
                .collect();
        }
        at = body
            + match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_ENUM64 => 12 * vlen,
                _ => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
            };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_names_its_drop_reasons() {
        let reasons = drop_reasons(Path::new(VMLINUX_BTF)).unwrap();
        let names: Vec<&str> = reasons.values().map(String::as_str).collect();
        for expected in ["NOT_SPECIFIED", "NO_SOCKET", "TCP_CSUM"] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn garbage_is_not_btf() {
        assert!(parse(b"not btf at all, not even close").is_none());
        assert!(parse(&[]).is_none());
    }
}
