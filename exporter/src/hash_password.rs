//! `podmeter-exporter hash-password`: the bcrypt hash for a web config
//! file's `basic_auth_users`, made by the binary that checks it, so that
//! setting up basic auth (kind-config/up.sh) needs no other tool.

use std::{
    io::{Read, Write},
    process::ExitCode,
};

/// The cost the exporter-toolkit's docs use (`htpasswd -nBC 10`).
const COST: u32 = 10;

pub fn run() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        eprintln!("podmeter-exporter hash-password: reading stdin: {e}");
        return ExitCode::FAILURE;
    }
    match hash(&password) {
        Ok(hash) => {
            let mut out = std::io::stdout();
            if writeln!(out, "{hash}").and_then(|()| out.flush()).is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("podmeter-exporter hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The hash of `input` without one trailing newline (`echo` adds one).
fn hash(input: &str) -> Result<String, String> {
    let password = input.strip_suffix('\n').unwrap_or(input);
    if password.is_empty() {
        return Err("empty password on stdin".into());
    }
    bcrypt::hash(password, COST).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_verifies_the_password_without_its_newline() {
        let h = hash("s3cret\n").unwrap();
        assert!(h.starts_with("$2b$10$"), "{h}");
        assert!(bcrypt::verify("s3cret", &h).unwrap());
        assert!(hash("\n").is_err());
    }
}
