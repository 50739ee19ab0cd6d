//! The CNI verbs. Each verb builds an [`Invocation`] first, which validates
//! everything the runtime passed before any of them touches the node.

mod add;
mod best_effort;
mod check;
mod del;
mod gc;
mod plan;
mod preflight;
mod rollback;
mod status;
mod validate;

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use podmeter_ebpf::PinLayout;
use rscni_plugin::{
    cni::Cni,
    error::Error as CniError,
    types::{Args, CNIResult, NetConf},
};

use crate::{
    config::{FromNetconf, PluginConfig},
    error::PluginError,
    ipam::{Ipam, IpamContext},
    net::{names::host_veth_name, netns::open_pod_netns},
    timing,
};

/// The plugin, as `rscni_plugin` dispatches to it.
pub struct Podmeter;

impl Cni for Podmeter {
    fn add(&self, args: Args) -> Result<CNIResult, CniError> {
        Ok(add::add(&Invocation::new(&args)?)?)
    }

    fn del(&self, args: Args) -> Result<(), CniError> {
        Ok(del::del(&Invocation::new(&args)?)?)
    }

    fn check(&self, args: Args) -> Result<(), CniError> {
        Ok(check::check(&Invocation::new(&args)?)?)
    }

    fn status(&self, args: Args) -> Result<(), CniError> {
        Ok(status::status(&Invocation::new(&args)?)?)
    }

    fn gc(&self, args: Args) -> Result<(), CniError> {
        Ok(gc::gc(&Invocation::new(&args)?)?)
    }
}

/// One call of the plugin: the runtime's parameters, parsed and validated.
pub struct Invocation<'a> {
    pub conf: &'a NetConf,
    pub plugin: PluginConfig,
    pub ipam: Ipam,
    /// Empty for GC and STATUS, which name no attachment.
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a Path>,
    pub cni_args: Option<&'a str>,
    pub cni_path: &'a [PathBuf],
    /// The config as JSON again, for a delegated IPAM plugin.
    raw_config: Vec<u8>,
}

impl<'a> Invocation<'a> {
    fn new(args: &'a Args) -> Result<Self, PluginError> {
        let conf = args.config();
        let plugin = PluginConfig::from_netconf(conf)?;
        let ipam = Ipam::from_netconf(conf)?;
        validate::validate(&ipam)?;
        let raw_config =
            serde_json::to_vec(conf).map_err(|e| PluginError::Config(e.to_string()))?;
        timing::mark("config");
        Ok(Self {
            conf,
            plugin,
            ipam,
            container_id: args.container_id().map(|c| &**c).unwrap_or_default(),
            ifname: args.ifname().map(|i| &**i).unwrap_or_default(),
            netns: args.netns().map(PathBuf::as_path),
            cni_args: args.args(),
            cni_path: args.path(),
            raw_config,
        })
    }

    pub fn network(&self) -> &str {
        &self.conf.name
    }

    pub fn ipam_context(&self) -> IpamContext<'_> {
        IpamContext {
            network: self.network(),
            container_id: self.container_id,
            ifname: self.ifname,
            netns: self.netns,
            cni_args: self.cni_args,
            cni_path: self.cni_path,
            raw_config: &self.raw_config,
        }
    }

    pub fn layout(&self) -> PinLayout {
        PinLayout::new(&self.plugin.pin_path)
    }

    /// The host end of this attachment's veth: derived from the attachment,
    /// so DEL finds it even when the pod's netns is gone.
    pub fn host_ifname(&self) -> String {
        host_veth_name(self.container_id, self.ifname)
    }

    /// The pod's network namespace, for ADD and CHECK: opened, and refused
    /// if it is not a network namespace or is the node's own.
    pub fn pod_netns(&self) -> Result<(&'a Path, File), PluginError> {
        let path = self
            .netns
            .expect("rscni refuses ADD and CHECK without CNI_NETNS before calling us");
        Ok((path, open_pod_netns(path)?))
    }
}
