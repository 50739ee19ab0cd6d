//! Container calls, as the kubelet makes them for a pod's containers once
//! its sandbox runs: create, start, status, stop, remove.

use k8s_cri::v1::{
    ContainerConfig, ContainerStatus, ContainerStatusRequest, CreateContainerRequest,
    PodSandboxConfig, RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
};
use serde_json::Value;
use tonic::Status;

use super::Cri;

impl Cri {
    /// CreateContainer in sandbox `sandbox_id` (made with `sandbox_config`,
    /// which the kubelet passes again); returns the container ID.
    pub fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String, Status> {
        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        };
        self.call(|mut c| async move { c.create_container(request).await })
            .map(|r| r.container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), Status> {
        let container_id = id.to_owned();
        self.call(|mut c| async move {
            c.start_container(StartContainerRequest { container_id })
                .await
        })
        .map(drop)
    }

    /// StopContainer: the image's stop signal (SIGTERM), then SIGKILL after
    /// `timeout_s` seconds, as for a pod's grace period.
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<(), Status> {
        let request = StopContainerRequest {
            container_id: id.to_owned(),
            timeout: timeout_s,
        };
        self.call(|mut c| async move { c.stop_container(request).await })
            .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), Status> {
        let container_id = id.to_owned();
        self.call(|mut c| async move {
            c.remove_container(RemoveContainerRequest { container_id })
                .await
        })
        .map(drop)
    }

    /// ContainerStatus and, from containerd's verbose info, the pid of the
    /// container's process (0 once it exited).
    pub fn container_status(&self, id: &str) -> Result<(ContainerStatus, u32), Status> {
        let container_id = id.to_owned();
        let response = self.call(|mut c| async move {
            c.container_status(ContainerStatusRequest {
                container_id,
                verbose: true,
            })
            .await
        })?;
        let info: Value = serde_json::from_str(&response.info["info"]).unwrap();
        let pid = info["pid"].as_u64().unwrap_or(0) as u32;
        Ok((response.status.expect("a status"), pid))
    }
}
