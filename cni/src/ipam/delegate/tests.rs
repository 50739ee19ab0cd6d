//! Delegation against shell-script plugins and the reference host-local plugin.

use std::{
    fs::{self, Permissions},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use rscni_plugin::{error::Error as CniError, types::GcAttachment};
use serde_json::{json, Value};

use super::{find_plugin, Delegate};
use crate::ipam::{IpamContext, IpamError};

const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

pub(super) fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, Permissions::from_mode(0o755)).unwrap();
    path
}

fn ctx<'a>(cni_path: &'a [PathBuf], raw_config: &'a [u8]) -> IpamContext<'a> {
    IpamContext {
        network: "testnet",
        container_id: "c1",
        ifname: "eth0",
        netns: Some(Path::new("/run/netns/podmeter-test-dummy")),
        cni_args: Some("K8S_POD_NAME=p;IgnoreUnknown=1"),
        cni_path,
        raw_config,
    }
}

fn env_of(file: &Path) -> Vec<String> {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn runs_the_reference_host_local_through_add_check_del() {
    // Installed by scripts/setup.sh (containernetworking-plugins): a missing
    // plugin is a broken setup, not a reason to skip.
    assert!(
        Path::new(REFERENCE_PLUGINS).join("host-local").is_file(),
        "{REFERENCE_PLUGINS}/host-local is missing: run scripts/setup.sh"
    );
    let tmp = tempfile::tempdir().unwrap();
    let cni_path = [tmp.path().join("empty"), PathBuf::from(REFERENCE_PLUGINS)];
    let delegate = Delegate::new("host-local").unwrap();
    for (n, version) in ["0.3.1", "0.4.0", "1.0.0"].into_iter().enumerate() {
        let raw = serde_json::to_vec(&json!({
            "cniVersion": version, "name": "testnet", "type": "podmeter",
            "ipam": {"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": tmp.path()}
        }))
        .unwrap();
        let id = format!("test-{version}");
        let ctx = IpamContext {
            container_id: &id,
            ..ctx(&cni_path, &raw)
        };

        let result = delegate.add(&ctx).unwrap();
        let want = format!("10.99.0.{}", n + 2);
        assert_eq!(result.ips.len(), 1, "{version}: {result:?}");
        assert_eq!(result.ips[0].address.to_string(), format!("{want}/24"));
        assert_eq!(result.ips[0].gateway, Some("10.99.0.1".parse().unwrap()));
        let lease = tmp.path().join("testnet").join(&want);
        assert_eq!(fs::read_to_string(&lease).unwrap(), format!("{id}\r\neth0"));

        let checks = version != "0.3.1"; // CHECK arrived in 0.4.0
        if checks {
            delegate.check(&ctx).unwrap();
        }
        delegate.del(&ctx).unwrap();
        assert!(!lease.exists(), "{version}: lease survived DEL");
        delegate.del(&ctx).unwrap();
        if checks {
            let err = delegate.check(&ctx).unwrap_err();
            assert!(matches!(err, IpamError::DelegateFailed { .. }), "{err}");
        }
    }
}

#[test]
fn passes_environment_and_exact_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let bin = tmp.path().join("bin");
    script(
        &bin,
        "spy",
        &format!(
            r#"env > {out}/env.$CNI_COMMAND
cat > {out}/stdin.$CNI_COMMAND
[ "$CNI_COMMAND" = ADD ] && echo '{{"cniVersion":"0.4.0","ips":[{{"version":"4","address":"10.5.0.9/16","gateway":"10.5.0.1"}}],"routes":[{{"dst":"0.0.0.0/0"}}],"dns":{{}}}}'
exit 0"#,
            out = out.display()
        ),
    );
    let cni_path = [tmp.path().join("missing"), bin.clone()];
    // Odd spacing on purpose: the delegate must get our bytes, not a re-serialization.
    let raw =
        br#"{ "cniVersion":"1.1.0", "name":"testnet","type":"podmeter", "ipam":{"type":"spy"} }"#;
    let delegate = Delegate::new("spy").unwrap();
    let ctx = ctx(&cni_path, raw);

    let result = delegate.add(&ctx).unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.5.0.9/16");
    assert_eq!(result.ips[0].interface, None);
    assert_eq!(result.routes.len(), 1);
    assert_eq!(fs::read(out.join("stdin.ADD")).unwrap(), raw);
    let env = env_of(&out.join("env.ADD"));
    let joined = format!("CNI_PATH={}:{}", cni_path[0].display(), bin.display());
    for want in [
        "CNI_COMMAND=ADD",
        "CNI_CONTAINERID=c1",
        "CNI_NETNS=/run/netns/podmeter-test-dummy",
        "CNI_IFNAME=eth0",
        "CNI_ARGS=K8S_POD_NAME=p;IgnoreUnknown=1",
        joined.as_str(),
    ] {
        assert!(env.iter().any(|l| l == want), "missing {want} in {env:?}");
    }
    // Marked, so a podmeter at the other end refuses to run.
    assert!(
        env.iter().any(|l| l == "PODMETER_IPAM_DELEGATE=1"),
        "{env:?}"
    );
    // Our own environment is inherited.
    assert!(env.iter().any(|l| l.starts_with("PATH=")), "{env:?}");

    delegate.del(&ctx).unwrap();
    delegate.check(&ctx).unwrap();
    assert!(env_of(&out.join("env.DEL")).contains(&"CNI_COMMAND=DEL".to_string()));
    assert!(env_of(&out.join("env.CHECK")).contains(&"CNI_COMMAND=CHECK".to_string()));

    delegate
        .status(&IpamContext {
            container_id: "",
            ifname: "",
            netns: None,
            cni_args: None,
            ..ctx
        })
        .unwrap();
    let env = env_of(&out.join("env.STATUS"));
    assert!(env.contains(&"CNI_COMMAND=STATUS".to_string()), "{env:?}");
    assert!(
        !env.iter()
            .any(|l| l.starts_with("CNI_IFNAME=") || l.starts_with("CNI_NETNS=")),
        "{env:?}"
    );
}

#[test]
fn gc_adds_valid_attachments_unless_present() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let bin = tmp.path().join("bin");
    script(
        &bin,
        "spy",
        &format!("env > {0}/env; cat > {0}/stdin", out.display()),
    );
    let cni_path = [bin];
    let delegate = Delegate::new("spy").unwrap();
    let valid = [GcAttachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];

    let raw = br#"{"cniVersion":"1.1.0","name":"testnet","type":"podmeter","ipam":{"type":"spy"}}"#;
    let gc_ctx = IpamContext {
        container_id: "",
        ifname: "",
        netns: None,
        cni_args: None,
        ..ctx(&cni_path, raw)
    };
    delegate.gc(&gc_ctx, &valid).unwrap();
    let sent: Value = serde_json::from_slice(&fs::read(out.join("stdin")).unwrap()).unwrap();
    assert_eq!(
        sent["cni.dev/valid-attachments"],
        json!([{"containerID": "keep", "ifname": "eth0"}])
    );
    assert_eq!(sent["ipam"]["type"], "spy");
    let env = env_of(&out.join("env"));
    assert!(env.contains(&"CNI_COMMAND=GC".to_string()));
    assert!(
        !env.iter().any(|l| l.starts_with("CNI_CONTAINERID=")),
        "{env:?}"
    );

    let raw = br#"{"cniVersion":"1.1.0","name":"testnet","type":"podmeter","cni.dev/valid-attachments":[]}"#;
    delegate
        .gc(
            &IpamContext {
                raw_config: raw,
                ..gc_ctx
            },
            &valid,
        )
        .unwrap();
    assert_eq!(fs::read(out.join("stdin")).unwrap(), raw);

    let err = delegate
        .gc(
            &IpamContext {
                raw_config: b"[1]",
                ..gc_ctx
            },
            &valid,
        )
        .unwrap_err();
    assert!(matches!(err, IpamError::RawConfig { .. }), "{err}");
}

#[test]
fn delegate_errors_keep_their_code() {
    let tmp = tempfile::tempdir().unwrap();
    let cni_path = [tmp.path().to_path_buf()];
    let raw = b"{}";
    let run = |body: &str| {
        script(tmp.path(), "fails", body);
        Delegate::new("fails")
            .unwrap()
            .add(&ctx(&cni_path, raw))
            .unwrap_err()
    };

    let err = run(r#"echo '{"code":11,"msg":"Try again later","details":"busy"}'; exit 1"#);
    assert_eq!(CniError::from(err), CniError::TryAgainLater("busy".into()));
    let err = run(r#"echo '{"code":999,"msg":"failed to allocate"}'; exit 1"#);
    assert_eq!(
        CniError::from(err),
        CniError::Custom(999, "failed to allocate".into(), String::new())
    );

    let err = run("echo 'not json'; echo 'boom: disk on fire' >&2; exit 3");
    assert!(matches!(err, IpamError::DelegateCrashed { .. }), "{err}");
    match CniError::from(err) {
        CniError::IOFailure(details) => {
            assert!(details.contains("boom: disk on fire"), "{details}")
        }
        other => panic!("unexpected {other:?}"),
    }

    let err = run("echo 'garbage'; exit 0");
    assert!(matches!(CniError::from(err), CniError::FailedToDecode(_)));
}

#[test]
fn a_delegate_that_ignores_stdin_does_not_hang_us() {
    let tmp = tempfile::tempdir().unwrap();
    script(tmp.path(), "deaf", "exit 0");
    let cni_path = [tmp.path().to_path_buf()];
    let raw = vec![b' '; 4 << 20];
    Delegate::new("deaf")
        .unwrap()
        .del(&ctx(&cni_path, &raw))
        .unwrap();
}

#[test]
fn plugin_lookup_takes_the_first_executable_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    fs::create_dir_all(a.join("ipam")).unwrap(); // a directory is not a plugin
    fs::create_dir_all(&b).unwrap();
    fs::write(b.join("ipam"), "#!/bin/sh\n").unwrap(); // not executable
    let paths = [a.clone(), b.clone(), c.clone()];

    let err = find_plugin("ipam", &paths).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"failed to find plugin "ipam" in path ["#),
        "{err}"
    );
    assert_eq!(u32::from(&CniError::from(err)), 7);

    let found = script(&c, "ipam", "exit 0");
    assert_eq!(find_plugin("ipam", &paths).unwrap(), found);
    let earlier = script(&b, "ipam", "exit 0");
    assert_eq!(find_plugin("ipam", &paths).unwrap(), earlier);
    assert!(matches!(
        find_plugin("ipam", &[]),
        Err(IpamError::PluginNotFound { .. })
    ));
}
