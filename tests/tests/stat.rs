//! `podmeterctl pods`, the command-line reader of the pins, as shells use it.

use std::process::{Command, Output};

use podmeter_tests::{binary, Node};

fn stat(node: &Node, json: bool, stdout: impl Into<std::process::Stdio>) -> Output {
    let mut command = Command::new(binary("podmeterctl"));
    command
        .arg("--bpf.pin-path")
        .arg(&node.pin_path)
        .arg("pods");
    if json {
        command.args(["--output", "json"]);
    }
    command.stdout(stdout).output().unwrap()
}

/// `podmeterctl | head -0`: the reader is gone before the first line.
/// A quiet success, not a panic (exit 101) on EPIPE.
#[test]
fn a_closed_stdout_ends_it_quietly() {
    podmeter_testkit::needs_root!();
    let node = Node::new();
    let conf = node.conf("1.1.0");
    let _pod = node.add_pod("a", &conf);
    for json in [false, true] {
        // With a reader, it prints the pod: there is something to write.
        let out = stat(&node, json, std::process::Stdio::piped());
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("test"),
            "{out:?}"
        );

        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = stat(&node, json, writer);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(stderr.is_empty(), "{stderr}");
        assert!(out.status.success(), "{:?}: {stderr}", out.status);
    }
}
