//! Mirrors the `subprocess.call(['nslookup', 'www.python.org'])` listing (tutorial note 001):
//! run an external command, let it print, report its exit code.
//!
//! What differs in Rust: `std::process::Command::status` is `subprocess.call`. The listing looks
//! a name up on the internet; CI has no network, so we look up `localhost` with `getent hosts`,
//! the name-service query every glibc system has (pass another name as the first argument).
//!
//!     cargo run --example subprocess_call [-- NAME]

use std::process::Command;

fn main() -> std::io::Result<()> {
    let name = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "localhost".to_string());
    println!("$ getent hosts {name}");
    let status = Command::new("getent").args(["hosts", &name]).status()?;
    match status.code() {
        Some(code) => println!("Exit code: {code}"),
        None => println!("Exit: {status}"),
    }
    Ok(())
}
