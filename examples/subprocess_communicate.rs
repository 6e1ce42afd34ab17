//! Mirrors the `Popen(['nslookup'], stdin=PIPE, stdout=PIPE).communicate(b'set q=mx\n...')`
//! listing (tutorial notes 001 and 003): feed a child's standard input, read its output.
//!
//! What differs in Rust: `Command` with piped stdio and `wait_with_output` is `communicate`
//! (stdin is written from a thread so a chatty child cannot deadlock against us). The listing
//! drives an interactive `nslookup` session over the network; we drive an interactive `sh`
//! session instead, since CI has no network.
//!
//!     cargo run --example subprocess_communicate

use std::io::Write;
use std::process::{Command, Stdio};

fn main() -> std::io::Result<()> {
    println!("$ sh");
    let mut child = Command::new("sh")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let feeder = std::thread::spawn(move || {
        stdin.write_all(b"echo \"6 * 7 = $((6 * 7))\"\nuname -s\nexit 3\n")
    });
    let output = child.wait_with_output()?;
    feeder.join().expect("the stdin writer panicked")?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    match output.status.code() {
        Some(code) => println!("Exit code: {code}"),
        None => println!("Exit: {}", output.status),
    }
    Ok(())
}
