//! Fault injection with `strace -f -e inject=…`, and reading its log to aim
//! a fault at one system call.
//!
//! What strace 6.1's `when=N` counts: invocations of that syscall *per
//! tracee*, i.e. per thread, each new thread or child process starting from
//! zero (it copies the injection spec at its first syscall, counters
//! included). So `S:when=N` fires at the N-th `S` of every thread that makes
//! N of them; a signal ends the process at the first of those in time. A
//! call is hit exactly when no other thread made its N-th `S` before it,
//! which [`Trace::aim`] checks.

use std::path::Path;

use crate::{cni::invoke, CniOutput, Node};

/// One system call in a `strace -f` log.
#[derive(Debug, Clone)]
pub struct Call {
    pub tid: u32,
    pub name: String,
    /// This call's number among the calls of `name` in its thread (from 1):
    /// what `when=` counts.
    pub nth: usize,
    /// The log line, decoded arguments included.
    pub line: String,
}

/// A `strace -f -o FILE` log, calls in the order they started.
#[derive(Debug, Default)]
pub struct Trace {
    pub calls: Vec<Call>,
}

impl Trace {
    pub fn read(path: &Path) -> Self {
        Self::parse(&std::fs::read_to_string(path).expect("read strace log"))
    }

    pub fn parse(log: &str) -> Self {
        let mut counts = std::collections::HashMap::new();
        let calls = log
            .lines()
            .filter_map(|line| {
                let (tid, rest) = line.split_once(' ')?;
                let rest = rest.trim_start();
                // `<... x resumed>` continues a call counted when it started;
                // `---` is a signal, `+++` an exit.
                if rest.starts_with(['<', '-', '+']) {
                    return None;
                }
                let name = rest.split_once('(')?.0.to_owned();
                let tid: u32 = tid.parse().ok()?;
                let nth = counts.entry((tid, name.clone())).or_insert(0);
                *nth += 1;
                Some(Call {
                    tid,
                    name,
                    nth: *nth,
                    line: line.to_owned(),
                })
            })
            .collect();
        Self { calls }
    }

    /// The first call matching `pred`.
    pub fn find(&self, what: &str, pred: impl Fn(&Call) -> bool) -> &Call {
        self.calls
            .iter()
            .find(|c| pred(c))
            .unwrap_or_else(|| panic!("no call in the trace is {what}"))
    }

    /// The first call after `start` matching `pred`.
    pub fn find_after(&self, start: &Call, what: &str, pred: impl Fn(&Call) -> bool) -> &Call {
        let at = self.position(start);
        self.calls[at + 1..]
            .iter()
            .find(|c| pred(c))
            .unwrap_or_else(|| panic!("no call after {} is {what}", start.line))
    }

    /// The next call of the same thread after `call`: killing there leaves
    /// exactly what `call` did.
    pub fn after(&self, call: &Call) -> &Call {
        self.find_after(call, "of its thread", |c| c.tid == call.tid)
    }

    /// `inject=` for `call` with `action` (`signal=KILL`, `error=EIO`),
    /// checked to hit `call` and no earlier call of another thread.
    pub fn aim(&self, call: &Call, action: &str) -> String {
        let at = self.position(call);
        if let Some(earlier) = self.calls[..at]
            .iter()
            .find(|c| c.name == call.name && c.nth == call.nth)
        {
            panic!(
                "when={} would hit {} before {}",
                call.nth, earlier.line, call.line
            );
        }
        format!("inject={}:{action}:when={}", call.name, call.nth)
    }

    fn position(&self, call: &Call) -> usize {
        self.calls
            .iter()
            .position(|c| c.tid == call.tid && c.name == call.name && c.nth == call.nth)
            .expect("call is from this trace")
    }
}

/// Runs the plugin in `node` under `strace -f`, logging to `log`, with the
/// extra strace arguments `strace_args` (an `-e inject=…`, say).
pub fn traced(
    node: &Node,
    strace_args: &[&str],
    log: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
) -> CniOutput {
    let mut cmd = node.ns.command("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(log)
        .args(strace_args)
        .arg(crate::binary("podmeter"));
    invoke(cmd, env, stdin)
}
