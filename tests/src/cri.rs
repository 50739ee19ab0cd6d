//! A CRI v1 client as the kubelet is one: gRPC over the runtime's unix
//! socket, with the `k8s-cri` crate's bindings of the CRI proto, and pod
//! sandbox configs filled in as the kubelet fills them.
//!
//! Blocking calls (a current-thread tokio runtime inside), so tests stay
//! plain `#[test]` functions.

use std::{future::Future, path::Path, time::Duration};

mod containers;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::{
    runtime_service_client::RuntimeServiceClient, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandbox,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PodSandboxStatusResponse,
    RemovePodSandboxRequest, RunPodSandboxRequest, StatusRequest, StatusResponse,
    StopPodSandboxRequest,
};
use serde_json::Value;
use tonic::{
    transport::{Channel, Endpoint, Uri},
    Response, Status,
};

/// A runtime under test answers within this, or the call fails (a hung
/// call would hang the test, and its cleanup, forever).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

/// A pod as the kubelet identifies it to the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodMeta {
    pub fn new(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.into(),
        }
    }

    /// A pod with a UID shaped as the API server's, one per name.
    pub fn with_uid_from_name(namespace: &str, name: &str) -> Self {
        let hash = name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b.into()));
        let uid = format!("0c1d2e3f-4a5b-4c6d-8e7f-{:012x}", hash & 0xffff_ffff_ffff);
        Self::new(namespace, name, &uid)
    }
}

impl Cri {
    /// A client of the runtime listening on `socket`; connects at the first
    /// call.
    pub fn new(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let socket = socket.to_owned();
        // The URI is required by tonic and ignored by the connector.
        let channel = rt.block_on(async {
            Endpoint::from_static("http://[::]:0")
                .timeout(CALL_TIMEOUT)
                .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                    let socket = socket.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(socket).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
        });
        Self {
            rt,
            client: RuntimeServiceClient::new(channel),
        }
    }

    fn call<T, F>(&self, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> Result<T, Status>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        self.rt
            .block_on(f(self.client.clone()))
            .map(Response::into_inner)
    }

    /// `Status` with `verbose`: containerd adds its loaded CNI config.
    pub fn status(&self) -> Result<StatusResponse, Status> {
        self.call(|mut c| async move { c.status(StatusRequest { verbose: true }).await })
    }

    /// RunPodSandbox; returns the sandbox ID (the CNI container ID).
    pub fn run_pod_sandbox(&self, config: PodSandboxConfig) -> Result<String, Status> {
        let request = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        self.call(|mut c| async move { c.run_pod_sandbox(request).await })
            .map(|r| r.pod_sandbox_id)
    }

    pub fn stop_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let pod_sandbox_id = id.to_owned();
        self.call(|mut c| async move {
            c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id })
                .await
        })
        .map(drop)
    }

    pub fn remove_pod_sandbox(&self, id: &str) -> Result<(), Status> {
        let pod_sandbox_id = id.to_owned();
        self.call(|mut c| async move {
            c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id })
                .await
        })
        .map(drop)
    }

    /// PodSandboxStatus with `verbose` (containerd adds the pause pid).
    pub fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatusResponse, Status> {
        let pod_sandbox_id = id.to_owned();
        self.call(|mut c| async move {
            c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id,
                verbose: true,
            })
            .await
        })
    }

    pub fn list_pod_sandbox(&self) -> Result<Vec<PodSandbox>, Status> {
        self.call(|mut c| async move { c.list_pod_sandbox(ListPodSandboxRequest::default()).await })
            .map(|r| r.items)
    }

    /// The pid of a sandbox's pause process, from containerd's verbose
    /// status (`info["info"]` is its JSON).
    pub fn sandbox_pid(&self, id: &str) -> Result<u32, Status> {
        let status = self.pod_sandbox_status(id)?;
        let info: Value = serde_json::from_str(&status.info["info"]).unwrap();
        Ok(info["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("no pid in {info}")) as u32)
    }
}

/// The sandbox config the kubelet sends for a pod without host network,
/// host ports or sysctls (`generatePodSandboxConfig`): metadata, the
/// kubelet's labels, hostname, namespaces (network and IPC shared by the
/// pod, PID per container) and a cgroup parent. No `log_directory`: the
/// kubelet would make `/var/log/pods/...` itself, and a sandbox writes no
/// log.
pub fn pod_sandbox_config(pod: &PodMeta, cgroup_parent: &str) -> PodSandboxConfig {
    let labels = [
        ("io.kubernetes.pod.name", &pod.name),
        ("io.kubernetes.pod.namespace", &pod.namespace),
        ("io.kubernetes.pod.uid", &pod.uid),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect();
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
            namespace: pod.namespace.clone(),
            attempt: 0,
        }),
        hostname: pod.name.clone(),
        labels,
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod.into(),
                    pid: NamespaceMode::Container.into(),
                    ipc: NamespaceMode::Pod.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
