//! Mirrors the loop of five `Process` objects in tutorial note 004: start several children,
//! then join them all.
//!
//! What differs in Rust: the handles live in a `Vec`, and a handle dropped without `join` is
//! still reaped (no zombie), but joining is how the parent learns each child's fate, so we do.
//! (The listing as printed joins inside the loop; its output shows the intent, all five
//! starting before any ends, which is what this example does.)
//!
//!     cargo run --example processes

use multiproc::Process;

/// The listing's `run_proc`.
fn run_proc(name: String) {
    println!("Child process {name} ({}) Running...", std::process::id());
}

fn main() -> Result<(), multiproc::Error> {
    println!("Parent process {}.", std::process::id());
    let mut children = Vec::new();
    for i in 0..5 {
        println!("Process will start.");
        children.push(Process::spawn(run_proc, i.to_string())?);
    }
    for child in &mut children {
        child.join()?;
    }
    println!("Process end.");
    Ok(())
}
