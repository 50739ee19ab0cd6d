//! Executing a whole conflist the way libcni does, for chaining tests:
//! ADD through every plugin in order (each gets the previous plugin's result
//! as `prevResult`), the final result cached on disk, CHECK in order and DEL
//! in reverse order, both with the cached result as `prevResult`.
//!
//! Each plugin's config is its entry in `plugins` plus the list's
//! `cniVersion` and `name`, and a `runtimeConfig` holding those capability
//! arguments the plugin declares in `capabilities` (`portMappings`,
//! `bandwidth`, ...). Plugins are looked up in the plugin dirs, which are
//! also passed as `CNI_PATH`, and run inside the node namespace.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use serde_json::{json, Map, Value};

use crate::{
    cni::{invoke, CniOutput},
    netns::NetNs,
};

/// One attachment of a container to the network, as a runtime describes it
/// to libcni (`RuntimeConf`).
#[derive(Debug, Clone)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs, in order.
    pub args: Vec<(String, String)>,
    /// Capability arguments (`portMappings`, `bandwidth`, ...); a plugin gets
    /// the ones it declares in `capabilities` as its `runtimeConfig`.
    pub capability_args: Map<String, Value>,
}

impl Attachment {
    /// An attachment of `netns` as `eth0` with no arguments.
    pub fn new(container_id: &str, netns: &NetNs) -> Self {
        Self {
            container_id: container_id.to_owned(),
            netns: netns.path(),
            ifname: "eth0".into(),
            args: Vec::new(),
            capability_args: Map::new(),
        }
    }

    pub fn arg(mut self, key: &str, value: &str) -> Self {
        self.args.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn capability(mut self, key: &str, value: Value) -> Self {
        self.capability_args.insert(key.to_owned(), value);
        self
    }
}

/// A conflist step that failed.
#[derive(Debug)]
pub enum ChainError {
    /// No plugin dir holds an executable of this `type`.
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    /// The plugin answered an error (or exited non-zero).
    Plugin {
        plugin: String,
        command: &'static str,
        output: Box<CniOutput>,
    },
    /// CHECK needs the result cached by ADD.
    NoCachedResult { key: String },
    /// CHECK is not defined before spec 0.4.0.
    CheckUnsupported { version: String },
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PluginNotFound { plugin, dirs } => {
                write!(f, "plugin {plugin:?} not found in {dirs:?}")
            }
            Self::Plugin {
                plugin,
                command,
                output,
            } => write!(
                f,
                "{command} of plugin {plugin:?} failed: {}\nstderr: {}",
                output.stdout, output.stderr
            ),
            Self::NoCachedResult { key } => write!(f, "no cached result for {key}"),
            Self::CheckUnsupported { version } => {
                write!(f, "CHECK is not supported by spec version {version}")
            }
        }
    }
}

impl std::error::Error for ChainError {}

/// A libcni-style runtime on one node: runs plugins inside the node's
/// namespace and caches final ADD results under `cache_dir/results`.
pub struct Runtime<'a> {
    node: &'a NetNs,
    plugin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
}

impl<'a> Runtime<'a> {
    /// Plugins from our binaries' dir, then the reference plugins.
    pub fn new(node: &'a NetNs, cache_dir: &Path) -> Self {
        let ours = crate::binary("podmeter")
            .parent()
            .expect("binary has a dir")
            .to_path_buf();
        Self::with_plugin_dirs(node, cache_dir, vec![ours, PathBuf::from("/usr/lib/cni")])
    }

    pub fn with_plugin_dirs(node: &'a NetNs, cache_dir: &Path, plugin_dirs: Vec<PathBuf>) -> Self {
        Self {
            node,
            plugin_dirs,
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    /// ADD through every plugin in order; caches and returns the final result.
    pub fn add(&self, list: &Value, att: &Attachment) -> Result<Value, ChainError> {
        let mut prev: Option<Value> = None;
        for plugin in plugins(list) {
            let out = self.exec("ADD", list, plugin, prev.as_ref(), att)?;
            prev = Some(out.json);
        }
        let result = prev.unwrap_or(Value::Null);
        let entry = json!({
            "kind": "cniCacheV1",
            "containerId": att.container_id,
            "ifName": att.ifname,
            "networkName": list["name"],
            "config": list,
            "cniArgs": att.args,
            "capabilityArgs": att.capability_args,
            "result": result,
        });
        let path = self.cache_path(list, att);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, entry.to_string()).unwrap();
        Ok(result)
    }

    /// CHECK through every plugin in order, each with the cached result.
    pub fn check(&self, list: &Value, att: &Attachment) -> Result<(), ChainError> {
        let version = list["cniVersion"].as_str().unwrap_or_default();
        if !at_least(version, "0.4.0") {
            return Err(ChainError::CheckUnsupported {
                version: version.to_owned(),
            });
        }
        let cached = self
            .cached_result(list, att)
            .ok_or_else(|| ChainError::NoCachedResult {
                key: self.cache_path(list, att).display().to_string(),
            })?;
        for plugin in plugins(list) {
            self.exec("CHECK", list, plugin, Some(&cached), att)?;
        }
        Ok(())
    }

    /// DEL through every plugin in reverse order, with the cached result as
    /// `prevResult` when there is one (from 0.4.0 on, as libcni), then drops
    /// the cache entry. Without a cache entry DEL still runs, config only.
    pub fn del(&self, list: &Value, att: &Attachment) -> Result<(), ChainError> {
        let version = list["cniVersion"].as_str().unwrap_or_default();
        let cached = self
            .cached_result(list, att)
            .filter(|_| at_least(version, "0.4.0"));
        for plugin in plugins(list).iter().rev() {
            self.exec("DEL", list, plugin, cached.as_ref(), att)?;
        }
        let _ = fs::remove_file(self.cache_path(list, att));
        Ok(())
    }

    /// The result ADD cached for this attachment, if any.
    pub fn cached_result(&self, list: &Value, att: &Attachment) -> Option<Value> {
        let text = fs::read_to_string(self.cache_path(list, att)).ok()?;
        let entry: Value = serde_json::from_str(&text).ok()?;
        Some(entry["result"].clone())
    }

    /// As libcni names it: `<cacheDir>/results/<network>-<container>-<ifname>`.
    pub fn cache_path(&self, list: &Value, att: &Attachment) -> PathBuf {
        self.cache_dir.join("results").join(format!(
            "{}-{}-{}",
            list["name"].as_str().unwrap_or_default(),
            att.container_id,
            att.ifname
        ))
    }

    /// The config one plugin of `list` is given (libcni's `buildOneConfig`).
    pub fn plugin_config(
        list: &Value,
        plugin: &Value,
        prev_result: Option<&Value>,
        att: &Attachment,
    ) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(prev) = prev_result {
            conf["prevResult"] = prev.clone();
        }
        let runtime_config: Map<String, Value> = plugin["capabilities"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, enabled)| enabled.as_bool() == Some(true))
            .filter_map(|(cap, _)| {
                att.capability_args
                    .get(cap)
                    .map(|arg| (cap.clone(), arg.clone()))
            })
            .collect();
        if !runtime_config.is_empty() {
            conf["runtimeConfig"] = Value::Object(runtime_config);
        }
        conf
    }

    fn exec(
        &self,
        command: &'static str,
        list: &Value,
        plugin: &Value,
        prev_result: Option<&Value>,
        att: &Attachment,
    ) -> Result<CniOutput, ChainError> {
        let kind = plugin["type"].as_str().unwrap_or_default().to_owned();
        let path = self.find(&kind)?;
        let conf = Self::plugin_config(list, plugin, prev_result, att);
        let cni_path = self
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let cni_args = att
            .args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";");
        let mut env = vec![
            ("CNI_COMMAND", command.to_owned()),
            ("CNI_CONTAINERID", att.container_id.clone()),
            ("CNI_NETNS", att.netns.display().to_string()),
            ("CNI_IFNAME", att.ifname.clone()),
            ("CNI_PATH", cni_path),
        ];
        if !cni_args.is_empty() {
            env.push(("CNI_ARGS", cni_args));
        }
        let cmd = self.node.command(path.to_str().unwrap());
        let output = invoke(cmd, &env, conf.to_string().as_bytes());
        if output.success {
            Ok(output)
        } else {
            Err(ChainError::Plugin {
                plugin: kind,
                command,
                output: Box::new(output),
            })
        }
    }

    fn find(&self, kind: &str) -> Result<PathBuf, ChainError> {
        // A type with a path in it would escape the plugin dirs.
        let found = (!kind.is_empty() && !kind.contains('/'))
            .then(|| {
                self.plugin_dirs
                    .iter()
                    .map(|d| d.join(kind))
                    .find(|p| p.is_file())
            })
            .flatten();
        found.ok_or_else(|| ChainError::PluginNotFound {
            plugin: kind.to_owned(),
            dirs: self.plugin_dirs.clone(),
        })
    }
}

fn plugins(list: &Value) -> &[Value] {
    list["plugins"]
        .as_array()
        .map(Vec::as_slice)
        .expect("a conflist has a `plugins` array")
}

/// `version >= min` for dotted spec versions ("0.4.0", "1.0.0").
fn at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(version) >= parse(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att() -> Attachment {
        Attachment {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            capability_args: Map::new(),
        }
        .capability("portMappings", json!([{"hostPort": 1, "containerPort": 2}]))
        .capability("bandwidth", json!({"ingressRate": 1}))
    }

    #[test]
    fn plugin_config_gets_name_version_prev_result_and_declared_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "net", "plugins": []});
        let plugin =
            json!({"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let conf = Runtime::plugin_config(&list, &plugin, Some(&prev), &att());
        assert_eq!(conf["name"], "net");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["prevResult"], prev);
        assert_eq!(
            conf["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 1, "containerPort": 2}]})
        );
        let plain = Runtime::plugin_config(&list, &json!({"type": "tuning"}), None, &att());
        assert!(plain.get("runtimeConfig").is_none() && plain.get("prevResult").is_none());
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("1.0.0", "0.4.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(at_least("0.10.0", "0.4.0"));
    }
}
