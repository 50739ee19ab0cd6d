//! Container images made from the machine's static busybox, without a
//! registry or an image builder: a rootfs tar (for `podman import`) and an
//! OCI image archive (for `ctr images import`), written here.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::netns::run;

/// The static busybox every test image is made of.
pub fn busybox() -> PathBuf {
    PathBuf::from("/bin/busybox")
}

/// True if the ELF file at `path` has no program interpreter (`PT_INTERP`).
pub fn is_static(path: &Path) -> bool {
    let Ok(elf) = fs::read(path) else {
        return false;
    };
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return false; // not a 64-bit ELF
    }
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).all(|i| {
        let o = phoff + i * size;
        elf.get(o..o + 4) != Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

/// `dir/busybox.tar`: a rootfs of busybox and a symlink per applet in `/bin`.
pub fn busybox_rootfs_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy(busybox(), rootfs.join("bin/busybox")).unwrap();
    let list = run(Command::new(busybox()).arg("--list"));
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
    }
    let tar = dir.join("busybox.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    fs::remove_dir_all(rootfs).unwrap();
    tar
}

/// `dir/oci.tar`: an OCI image archive (image layout, one manifest) of the
/// busybox rootfs, named `name` (e.g. `localhost/pause:1`) and running
/// `entrypoint`. `ctr images import` names the image from the
/// `io.containerd.image.name` annotation.
pub fn busybox_oci_archive(dir: &Path, name: &str, entrypoint: &[&str]) -> PathBuf {
    let layout = dir.join("oci");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer = fs::read(busybox_rootfs_tar(dir)).unwrap();
    let platform =
        json!({"architecture": std::env::consts::ARCH.replace("x86_64", "amd64"), "os": "linux"});
    let config = json!({
        "architecture": platform["architecture"],
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        // The layer is not compressed: its diff ID is its digest.
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
    });
    let layer = blob(&layout, "application/vnd.oci.image.layer.v1.tar", &layer);
    let config = blob(
        &layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config,
        "layers": [layer],
    });
    let mut manifest = blob(
        &layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    manifest["platform"] = platform;
    manifest["annotations"] = json!({"io.containerd.image.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [manifest]});
    fs::write(layout.join("index.json"), index.to_string()).unwrap();
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let tar = dir.join("oci.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    fs::remove_dir_all(layout).unwrap();
    tar
}

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Stores `bytes` under `blobs/` and returns their descriptor.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> Value {
    let digest = digest(bytes);
    let file = digest.replace("sha256:", "blobs/sha256/");
    fs::write(layout.join(file), bytes).unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_busybox_has_no_interpreter_and_ls_has_one() {
        assert!(
            is_static(&busybox()),
            "busybox-static: run scripts/setup.sh"
        );
        assert!(!is_static(Path::new("/bin/ls")));
        assert!(!is_static(Path::new("/etc/hostname")));
    }

    #[test]
    fn digests_are_sha256_of_the_bytes() {
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
