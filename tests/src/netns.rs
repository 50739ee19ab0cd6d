//! A named network namespace that is deleted on drop.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Self {
        let name = crate::unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        // Loopback up, as a container runtime would leave it.
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// A command that runs inside this namespace (`nsenter`, which unlike
    /// `ip netns exec` leaves /sys alone).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg(program);
        c
    }

    /// Runs `argv` in the namespace; panics with its output if it fails.
    pub fn exec(&self, argv: &[&str]) -> String {
        let out = run(self.command(argv[0]).args(&argv[1..]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `argv` in the namespace and returns its output, failed or not.
    pub fn try_exec(&self, argv: &[&str]) -> Output {
        self.command(argv[0])
            .args(&argv[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?}: {e}"))
    }

    /// Runs `f` on a thread that has entered this namespace (for code that
    /// looks interfaces up by name, like the eBPF crate's queries).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let file = std::fs::File::open(self.path()).unwrap();
        std::thread::scope(|s| {
            s.spawn(move || {
                // Affects this thread only.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// `busybox ping` (there is no `ping` binary); panics on loss.
    pub fn ping(&self, addr: &str, count: u32, size: u32) {
        ping(self.command("busybox"), addr, count, size);
    }

    /// Interface names in this namespace.
    pub fn links(&self) -> Vec<String> {
        let json: serde_json::Value =
            serde_json::from_str(&self.exec(&["ip", "-j", "link", "show"])).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Runs `busybox` (as `cmd`, e.g. inside a namespace) to ping `addr`
/// `count` times with `size` bytes of payload; panics on loss.
pub fn ping(mut cmd: Command, addr: &str, count: u32, size: u32) {
    run(cmd
        .args(["ping", "-c", &count.to_string(), "-s", &size.to_string()])
        .args(["-i", "0.01", "-W", "2", addr]));
}

pub(crate) fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
