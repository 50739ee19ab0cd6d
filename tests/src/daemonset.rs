//! podmeter's DaemonSet (`kind-config/manifests/daemonset.yaml`) as the
//! kubelet turns its pod into CRI calls, and the image it runs (the archive
//! `scripts/image.sh` writes). Everything is read from the manifest: the
//! image name, commands and flags, env, security contexts, volume mounts
//! with their propagation, resources and probes. A test only says what
//! differs on its node (host paths of the volumes, flags naming test
//! paths), through [`set_flag`] and explicit arguments, so the manifest
//! cannot drift from what the test runs unnoticed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext, Mount,
    MountPropagation, NamespaceMode, PodSandboxConfig,
};
use serde_json::Value;

use crate::cri::{pod_sandbox_config, PodMeta};

/// The manifest, relative to the workspace.
const MANIFEST: &str = "kind-config/manifests/daemonset.yaml";

/// The checkout's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The image archive `scripts/image.sh` builds (`PODMETER_IMAGE_ARCHIVE`,
/// as for the script, or its default); panics if it is missing.
pub fn image_archive() -> PathBuf {
    let path = std::env::var_os("PODMETER_IMAGE_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/image/podmeter.oci.tar"));
    assert!(
        path.is_file(),
        "{} is missing: build the image with scripts/image.sh (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Where a probe connects, and the path of an `httpGet` probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub addr: SocketAddr,
    pub http_path: Option<String>,
}

/// The DaemonSet's pod template.
pub struct DaemonSet {
    namespace: String,
    name: String,
    spec: Value,
}

impl DaemonSet {
    pub fn load() -> Self {
        let path = workspace().join(MANIFEST);
        let text = std::fs::read_to_string(&path).unwrap();
        let ds: Value =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(ds["kind"], "DaemonSet", "{MANIFEST}");
        Self {
            namespace: ds["metadata"]["namespace"].as_str().unwrap().to_owned(),
            name: ds["metadata"]["name"].as_str().unwrap().to_owned(),
            spec: ds["spec"]["template"]["spec"].clone(),
        }
    }

    /// The pod the DaemonSet controller would make on a node: its
    /// namespace, `<name>-<suffix>`, a UID.
    pub fn pod(&self, suffix: &str) -> PodMeta {
        PodMeta::with_uid_from_name(&self.namespace, &format!("{}-{suffix}", self.name))
    }

    /// Container names, in the manifest's order.
    pub fn containers(&self) -> Vec<String> {
        self.spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The capabilities container `name` adds (`securityContext`), as the
    /// manifest spells them ("BPF").
    pub fn added_capabilities(&self, name: &str) -> Vec<String> {
        strings(&self.container(name)["securityContext"]["capabilities"]["add"])
    }

    fn container(&self, name: &str) -> &Value {
        self.spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name} in {MANIFEST}"))
    }

    /// The sandbox config the kubelet sends for this pod: a pod's, with
    /// the node's network (and UTS) namespace for `hostNetwork`, privileged if a
    /// container is, and container logs under `log_directory`.
    pub fn sandbox_config(
        &self,
        pod: &PodMeta,
        cgroup_parent: &str,
        log_directory: &Path,
    ) -> PodSandboxConfig {
        let mut config = pod_sandbox_config(pod, cgroup_parent);
        config.log_directory = log_directory.display().to_string();
        let security = config
            .linux
            .as_mut()
            .unwrap()
            .security_context
            .as_mut()
            .unwrap();
        if self.spec["hostNetwork"] == true {
            security.namespace_options.as_mut().unwrap().network = NamespaceMode::Node.into();
            // The kubelet sets no hostname then: the pod has the node's UTS
            // namespace (runc refuses to set one without a private one).
            config.hostname.clear();
        }
        security.privileged = self.spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["securityContext"]["privileged"] == true);
        config
    }

    /// The config the kubelet sends to create container `name` on node
    /// `node_name`, with `volumes` (name → host path, as the runtime sees
    /// it) as the pod's volumes; a mount of a volume in `left_out` is left
    /// out (a test without TLS leaves out the Secret). Its log is
    /// `<log_directory>/<name>/0.log`.
    pub fn container_config(
        &self,
        name: &str,
        node_name: &str,
        volumes: &[(&str, &Path)],
        left_out: &[&str],
    ) -> ContainerConfig {
        let c = self.container(name);
        let envs = c["env"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let value = match (&e["value"], &e["valueFrom"]["fieldRef"]["fieldPath"]) {
                    (Value::String(v), _) => v.clone(),
                    (_, Value::String(field)) if field == "spec.nodeName" => node_name.to_owned(),
                    _ => panic!("{MANIFEST}: env {e} is not supported here"),
                };
                KeyValue {
                    key: e["name"].as_str().unwrap().to_owned(),
                    value,
                }
            })
            .collect();
        let mounts = c["volumeMounts"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| {
                let volume = m["name"].as_str().unwrap();
                if left_out.contains(&volume) {
                    return None;
                }
                let (_, host) = volumes
                    .iter()
                    .find(|(v, _)| *v == volume)
                    .unwrap_or_else(|| panic!("no host path for volume {volume}"));
                let propagation = match m["mountPropagation"].as_str() {
                    None | Some("None") => MountPropagation::PropagationPrivate,
                    Some("HostToContainer") => MountPropagation::PropagationHostToContainer,
                    Some("Bidirectional") => MountPropagation::PropagationBidirectional,
                    Some(other) => panic!("{MANIFEST}: mountPropagation {other}"),
                };
                Some(Mount {
                    container_path: m["mountPath"].as_str().unwrap().to_owned(),
                    host_path: host.display().to_string(),
                    readonly: m["readOnly"] == true,
                    propagation: propagation.into(),
                    ..Default::default()
                })
            })
            .collect();
        let sc = &c["securityContext"];
        let id = |v: &Value| v.as_i64().map(|value| Int64Value { value });
        let security_context = LinuxContainerSecurityContext {
            privileged: sc["privileged"] == true,
            readonly_rootfs: sc["readOnlyRootFilesystem"] == true,
            run_as_user: id(&sc["runAsUser"]),
            run_as_group: id(&sc["runAsGroup"]),
            // As the kubelet maps it.
            no_new_privs: sc["allowPrivilegeEscalation"] == false,
            capabilities: Some(Capability {
                add_capabilities: strings(&sc["capabilities"]["add"]),
                drop_capabilities: strings(&sc["capabilities"]["drop"]),
                ..Default::default()
            }),
            ..Default::default()
        };
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_owned(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: c["image"].as_str().unwrap().to_owned(),
                ..Default::default()
            }),
            command: strings(&c["command"]),
            args: strings(&c["args"]),
            envs,
            mounts,
            log_path: format!("{name}/0.log"),
            linux: Some(LinuxContainerConfig {
                resources: Some(resources(&c["resources"])),
                security_context: Some(security_context),
            }),
            ..Default::default()
        }
    }

    /// Where the kubelet's readiness probe of container `name` connects:
    /// the node's network, so 127.0.0.1 when the probe names no host.
    pub fn readiness_probe(&self, name: &str) -> Probe {
        let c = self.container(name);
        let probe = &c["readinessProbe"];
        let (action, http_path) = match (&probe["httpGet"], &probe["tcpSocket"]) {
            (Value::Object(_), _) => (&probe["httpGet"], probe["httpGet"]["path"].as_str()),
            (_, Value::Object(_)) => (&probe["tcpSocket"], None),
            _ => panic!("{MANIFEST}: {name}'s readinessProbe is neither httpGet nor tcpSocket"),
        };
        let port = match &action["port"] {
            Value::Number(n) => n.as_u64().unwrap() as u16,
            // A named port: the container's port of that name.
            Value::String(port) => c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| &p["name"] == port)
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("{MANIFEST}: no port {port} in {name}"))
                as u16,
            other => panic!("{MANIFEST}: probe port {other}"),
        };
        let host = action["host"].as_str().unwrap_or("127.0.0.1");
        Probe {
            addr: SocketAddr::new(host.parse().unwrap(), port),
            http_path: http_path.map(str::to_owned),
        }
    }
}

/// A list of strings in the manifest (empty when absent).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The kubelet's translation of requests and limits (cgroup v2 values
/// left to the runtime): CPU shares from the request, the memory limit.
fn resources(r: &Value) -> LinuxContainerResources {
    let millicpu = r["requests"]["cpu"]
        .as_str()
        .map(|c| match c.strip_suffix('m') {
            Some(m) => m.parse::<i64>().unwrap(),
            None => c.parse::<i64>().unwrap() * 1000,
        });
    LinuxContainerResources {
        // MilliCPUToShares: at least 2.
        cpu_shares: millicpu.map_or(2, |m| (m * 1024 / 1000).max(2)),
        memory_limit_in_bytes: r["limits"]["memory"].as_str().map_or(0, quantity),
        ..Default::default()
    }
}

/// A binary-suffixed quantity (`128Mi`) in bytes.
fn quantity(q: &str) -> i64 {
    let units: HashMap<&str, i64> = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30)].into();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (number, unit) = q.split_at(split);
    let scale = if unit.is_empty() {
        1
    } else {
        *units
            .get(unit)
            .unwrap_or_else(|| panic!("quantity {q}: unit {unit}"))
    };
    number.parse::<i64>().unwrap() * scale
}

/// Replaces the value of `--flag=VALUE` in the container's command or args
/// (`Some`), or removes it (`None`); panics if the manifest does not pass
/// that flag, so a renamed flag fails the test instead of being ignored.
pub fn set_flag(config: &mut ContainerConfig, flag: &str, value: Option<&str>) {
    let prefix = format!("{flag}=");
    let mut found = false;
    for list in [&mut config.command, &mut config.args] {
        list.retain_mut(|arg| {
            if !arg.starts_with(&prefix) {
                return true;
            }
            found = true;
            match value {
                Some(v) => {
                    *arg = format!("{prefix}{v}");
                    true
                }
                None => false,
            }
        });
    }
    assert!(
        found,
        "the manifest passes no {flag}= to {:?}",
        config.command
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_shares_as_the_kubelet_computes_them() {
        assert_eq!(quantity("128Mi"), 128 << 20);
        assert_eq!(quantity("1Gi"), 1 << 30);
        assert_eq!(quantity("1000"), 1000);
        let r = resources(
            &serde_json::json!({"requests": {"cpu": "10m"}, "limits": {"memory": "64Mi"}}),
        );
        assert_eq!((r.cpu_shares, r.memory_limit_in_bytes), (10, 64 << 20));
        assert_eq!(resources(&serde_json::json!({})).cpu_shares, 2);
    }

    #[test]
    fn the_manifest_reads_into_cri_configs() {
        let ds = DaemonSet::load();
        assert_eq!(ds.containers(), ["agent", "exporter"]);
        let tmp = Path::new("/tmp");
        let volumes = [
            ("bpffs", tmp),
            ("cni-bin", tmp),
            ("cni-conf", tmp),
            ("ipam-data", tmp),
        ];
        let mut agent = ds.container_config("agent", "node-a", &volumes, &[]);
        assert!(agent.envs.contains(&KeyValue {
            key: "NODE_NAME".into(),
            value: "node-a".into()
        }));
        let bpffs = agent
            .mounts
            .iter()
            .find(|m| m.container_path == "/sys/fs/bpf");
        assert_eq!(
            bpffs.unwrap().propagation,
            MountPropagation::PropagationBidirectional as i32
        );
        set_flag(&mut agent, "--bpf.pin-path", Some("/x"));
        assert!(agent.command.contains(&"--bpf.pin-path=/x".to_owned()));
        set_flag(&mut agent, "--bpf.pin-path", None);
        assert!(!agent
            .command
            .iter()
            .any(|a| a.starts_with("--bpf.pin-path")));

        let exporter = ds.container_config("exporter", "node-a", &volumes, &["web-config"]);
        let sc = exporter.linux.unwrap().security_context.unwrap();
        assert_eq!(sc.capabilities.unwrap().drop_capabilities, ["ALL"]);
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        assert_eq!(ds.readiness_probe("exporter").addr.port(), 9977);
    }
}
