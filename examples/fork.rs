//! Mirrors the `os.fork()` listing (tutorial notes 001 and 004): the parent and the child print
//! their PIDs, and the child learns its parent's PID.
//!
//! What differs in Rust: `fork()` "returns twice", which safe Rust cannot express — after a raw
//! fork in a program with threads only async-signal-safe calls are allowed in the child. So the
//! child's half of the `if pid == 0` branch becomes a function, and the crate forks with
//! `StartMethod::Fork`: the child is a copy of the parent made by `fork(2)`, as in Python, runs
//! that function, and its result comes back to the parent.
//!
//!     cargo run --example fork

use multiproc::{current_process, Process, StartMethod};

/// The `pid == 0` branch of the listing.
fn child(_: ()) -> (u32, u32) {
    let (me, parent) = (current_process().pid, std::os::unix::process::parent_id());
    println!("I am child process ({me}) and my parent is {parent}.");
    (me, parent)
}

fn main() -> Result<(), multiproc::Error> {
    let me = std::process::id();
    println!("Process ({me}) start...");
    let mut child_process = Process::builder()
        .start_method(StartMethod::Fork)
        .spawn(child, ())?;
    println!(
        "I ({me}) just created a child process ({}).",
        child_process.pid()
    );
    let (child_pid, its_parent) = child_process.join()?;
    assert_eq!((child_pid, its_parent), (child_process.pid(), me));
    Ok(())
}
