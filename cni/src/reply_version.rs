//! Error results in the config's `cniVersion`, as the spec asks: rscni
//! writes an error in the plugin's own (newest) version, so the plugin is
//! made with the config's version as its own. That needs the config before
//! rscni reads stdin: it is read here and put back as stdin (a memfd), the
//! bytes unchanged.

use std::{
    io::{Read, Seek, Write},
    os::fd::OwnedFd,
};

use nix::{sys::memfd, unistd::dup2_stdin};
use rscni_plugin::version::{PluginInfo, SpecVersion};

/// The version to answer in: the config's, when it is one the plugin
/// speaks; `None` for VERSION (which reports the plugin's own), a missing
/// command, or a config without a usable `cniVersion` (rscni reports those).
pub fn config_version() -> Option<SpecVersion> {
    let command = std::env::var("CNI_COMMAND").ok()?;
    if command.is_empty() || command == "VERSION" {
        return None;
    }
    let mut config = Vec::new();
    std::io::stdin().read_to_end(&mut config).ok()?;
    // Put back even if unreadable as JSON: rscni reports that.
    if let Err(e) = replace_stdin(&config) {
        // Without stdin the verb cannot run at all: say why on stderr and
        // let rscni report the empty input.
        eprintln!("podmeter: putting the config back on stdin: {e}");
    }
    let version = parse_version(&config)?;
    PluginInfo::default()
        .supported_versions()
        .contains(&version)
        .then_some(version)
}

fn parse_version(config: &[u8]) -> Option<SpecVersion> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(rename = "cniVersion")]
        cni_version: String,
    }
    let v: Versioned = serde_json::from_slice(config).ok()?;
    v.cni_version.parse().ok()
}

fn replace_stdin(config: &[u8]) -> std::io::Result<()> {
    let fd: OwnedFd = memfd::memfd_create(c"podmeter-config", memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(config)?;
    file.rewind()?;
    dup2_stdin(&file)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configs_version_is_read_and_bad_ones_are_none() {
        let v = |s: &str| parse_version(s.as_bytes()).map(|v| v.to_string());
        assert_eq!(
            v(r#"{"cniVersion":"0.4.0","name":"n"}"#).as_deref(),
            Some("0.4.0")
        );
        assert_eq!(
            v(r#"{"name":"n","cniVersion":"1.0.0"}"#).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(v(r#"{"name":"n"}"#), None);
        assert_eq!(v("not json"), None);
    }
}
