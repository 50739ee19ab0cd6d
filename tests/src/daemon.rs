//! Following a long-running podmeter binary (exporter, agent) through its
//! logfmt stderr: they announce `message=listening address=...` once they
//! serve; the log is kept for assertions and failure messages.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::Child,
    sync::{mpsc, Arc, Mutex},
    thread,
    time::Duration,
};

/// Every stderr line so far.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Reads `child`'s piped stderr on a thread and waits up to `timeout` for
/// its `listening` line; kills it and panics with its log if the line
/// does not come.
pub fn wait_listening(child: &mut Child, what: &str, timeout: Duration) -> (SocketAddr, Log) {
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = Log::default();
    let (tx, rx) = mpsc::channel();
    let lines = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("message=listening") {
                let addr = line
                    .split(' ')
                    .find_map(|kv| kv.strip_prefix("address="))
                    .and_then(|a| a.parse::<SocketAddr>().ok());
                let _ = tx.send(addr);
            }
            lines.lock().unwrap().push(line);
        }
    });
    let Some(addr) = rx.recv_timeout(timeout).ok().flatten() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} never logged `listening address=...`:\n{}",
            log.lock().unwrap().join("\n")
        );
    };
    (addr, log)
}
