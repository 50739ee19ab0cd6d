//! Compiles the C tc programs in `bpf/` into a BPF object embedded by `src/object.rs`.
//!
//! clang is looked up as `$BPF_CLANG`, then `clang`, then the versioned names
//! Debian ships (`clang-19` ...), so a fresh Debian 12 machine with the
//! project's setup needs no configuration.

use std::{env, path::PathBuf, process::Command};

const SOURCES: &[&str] = &[
    "bpf/podmeter.bpf.c",
    "bpf/podmeter.h",
    "bpf/parse.h",
    "bpf/policy.h",
    "bpf/k8s_policy.h",
    "bpf/fragments.h",
    "bpf/validate.h",
    "bpf/tcp.h",
];
const CLANG_CANDIDATES: &[&str] = &["clang", "clang-21", "clang-20", "clang-19", "clang-18"];

fn find_clang() -> String {
    if let Ok(clang) = env::var("BPF_CLANG") {
        return clang;
    }
    CLANG_CANDIDATES
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(|c| (*c).to_owned())
        .unwrap_or_else(|| {
            panic!("no clang found (tried $BPF_CLANG, {CLANG_CANDIDATES:?}); run scripts/setup.sh")
        })
}

/// `<asm/types.h>` lives in a per-architecture directory on Debian.
fn multiarch_include() -> Option<String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let triple = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        _ => return None,
    };
    Some(format!("/usr/include/{triple}"))
}

fn main() {
    for src in SOURCES {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=BPF_CLANG");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("podmeter.bpf.o");
    let mut cmd = Command::new(find_clang());
    // -g: aya needs the object's BTF to define maps declared in SEC(".maps").
    cmd.args([
        "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c", SOURCES[0], "-o",
    ])
    .arg(&out);
    if let Some(dir) = multiarch_include() {
        cmd.arg("-I").arg(dir);
    }
    let status = cmd.status().expect("failed to run clang");
    assert!(status.success(), "clang failed to compile {}", SOURCES[0]);
}
