//! Mirrors the `Process(target=run_proc, args=('test',))` listing (tutorial notes 001, 003 and
//! 004): start one child process, wait for it, go on.
//!
//! What differs in Rust: `Process::spawn` starts the child at once (Python's `Process(...)` plus
//! `start()`), and `join()` hands back the function's return value, or a typed error if the
//! child panicked or was killed. No `if __name__ == '__main__'` guard is needed: a re-executed
//! child never runs `main`.
//!
//!     cargo run --example process

use multiproc::Process;

/// The child's code: the listing's `run_proc`.
fn run_proc(name: String) {
    println!("Run child process {name} ({})...", std::process::id());
}

fn main() -> Result<(), multiproc::Error> {
    println!("Parent process {}.", std::process::id());
    println!("Child process will start.");
    let mut p = Process::spawn(run_proc, "test".to_string())?;
    p.join()?;
    println!("Child process end.");
    Ok(())
}
