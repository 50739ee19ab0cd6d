//! `CNI_ARGS`: the pod's identity as Kubernetes runtimes pass it
//! (`K8S_POD_NAMESPACE=ns;K8S_POD_NAME=name;K8S_POD_UID=uid;...`).

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
    /// since the metering identity is informational.
    pub fn from_cni_args(args: Option<&str>) -> Self {
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
        ));
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
        assert_eq!(PodRef::from_cni_args(None), PodRef::default());
        assert_eq!(
            PodRef::from_cni_args(Some("garbage;;K8S_POD_NAME")),
            PodRef::default()
        );
    }
}
