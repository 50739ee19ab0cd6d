//! The names of the BPF filters on a link's clsact hooks: what CHECK
//! compares against when the programs were attached with clsact (TCX
//! attachments are queried through the eBPF crate instead).

use futures::TryStreamExt;
use rtnetlink::packet_route::tc::{TcAttribute, TcFilterBpfOption, TcOption};
use rtnetlink::Handle;

use super::error::netlink_errno;
use super::NetError;

/// Program names of the BPF filters at the ingress (`ingress = true`) or
/// egress hook of link `index`, in the kernel's order. A link without a
/// clsact qdisc has none.
pub async fn bpf_filter_names(
    h: &Handle,
    index: u32,
    ingress: bool,
) -> Result<Vec<String>, NetError> {
    let request = h.traffic_filter(index as i32).get();
    let request = if ingress {
        request.ingress()
    } else {
        request.egress()
    };
    let messages: Vec<_> = match request.execute().try_collect().await {
        Ok(messages) => messages,
        // No clsact qdisc: the kernel refuses to list its (absent) hooks.
        Err(e) if netlink_errno(&e) == Some(libc::EINVAL) => return Ok(Vec::new()),
        Err(e) => {
            return Err(NetError::netlink("list tc filters of", index.to_string())(
                e,
            ))
        }
    };
    Ok(messages
        .iter()
        .flat_map(|m| &m.attributes)
        .filter_map(|a| match a {
            TcAttribute::Options(options) => Some(options),
            _ => None,
        })
        .flatten()
        .filter_map(|o| match o {
            TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => Some(name.clone()),
            _ => None,
        })
        .collect())
}
