//! `CNI_ARGS`: the pod's identity as Kubernetes runtimes pass it
//! (`K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;K8S_POD_UID=uid;...`).

use crate::error::PluginError;

/// Kubernetes' own limits: a namespace is a DNS label, a pod name a DNS
/// subdomain, a UID far shorter than a label. Longer values come from no
/// API server; the registry's fields hold these and no more.
const LIMITS: [(&str, usize); 3] = [
    ("K8S_POD_NAMESPACE", 63),
    ("K8S_POD_NAME", 253),
    ("K8S_POD_UID", 63),
];

/// The Kubernetes identity of a pod; absent keys are empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodRef {
    /// Parses `CNI_ARGS`. Unknown keys (`IgnoreUnknown`, `IP`, ...) are
    /// ignored; a pair without `=` is skipped rather than failing the ADD,
    /// since the metering identity is informational. A value longer than
    /// Kubernetes allows is the runtime's mistake: refused (code 4, as a
    /// bad `CNI_IFNAME`) before ADD touches anything.
    pub fn from_cni_args(args: Option<&str>) -> Result<Self, PluginError> {
        let pod = Self::parse(args);
        for ((key, max), value) in LIMITS.iter().zip([&pod.namespace, &pod.name, &pod.uid]) {
            if value.len() > *max {
                return Err(PluginError::Args(format!(
                    "{key} is {} bytes; Kubernetes allows at most {max}",
                    value.len()
                )));
            }
        }
        Ok(pod)
    }

    fn parse(args: Option<&str>) -> Self {
        let mut pod = PodRef::default();
        for pair in args.unwrap_or_default().split(';') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let slot = match key.trim() {
                "K8S_POD_NAMESPACE" => &mut pod.namespace,
                "K8S_POD_NAME" => &mut pod.name,
                "K8S_POD_UID" => &mut pod.uid,
                _ => continue,
            };
            *slot = value.trim().to_owned();
        }
        pod
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_keys() {
        let p = PodRef::from_cni_args(Some(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        ))
        .unwrap();
        assert_eq!(
            p,
            PodRef {
                namespace: "default".into(),
                name: "web-0".into(),
                uid: "u-1".into()
            }
        );
    }

    #[test]
    fn absent_or_malformed_is_empty() {
        assert_eq!(PodRef::from_cni_args(None).unwrap(), PodRef::default());
        assert_eq!(
            PodRef::from_cni_args(Some("garbage;;K8S_POD_NAME")).unwrap(),
            PodRef::default()
        );
    }

    #[test]
    fn longer_than_kubernetes_allows_is_an_environment_error() {
        let name = |n: usize| format!("K8S_POD_NAMESPACE=ns;K8S_POD_NAME={}", "p".repeat(n));
        assert_eq!(
            PodRef::from_cni_args(Some(&name(253))).unwrap().name.len(),
            253
        );
        let err = PodRef::from_cni_args(Some(&name(256))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CNI_ARGS: K8S_POD_NAME is 256 bytes; Kubernetes allows at most 253"
        );
        assert_eq!(u32::from(&rscni_plugin::error::Error::from(err)), 4);
    }
}
