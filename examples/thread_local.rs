//! Mirrors the `threading.local()` listing of tutorial notes 001 and 003: a global
//! `local_school` holds a different `student` in each thread, so `process_student` needs no
//! argument.
//!
//! What differs in Rust: `thread_local!` declares the per-thread slot and `with` reaches it; the
//! value is typed (`RefCell<Option<String>>`), so reading a student that was never bound is an
//! explicit `None`, not an `AttributeError`.
//!
//!     cargo run --example thread_local

mod common;

use std::cell::RefCell;
use std::thread;

thread_local! {
    /// The listing's `local_school.student`: each thread sees only its own.
    static STUDENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn process_student() {
    let student = STUDENT.with(|s| s.borrow().clone());
    match student {
        Some(std) => println!("Hello, {std} (in {})", common::thread_name()),
        None => println!("No student bound in {}", common::thread_name()),
    }
}

fn process_thread(name: &str) {
    STUDENT.with(|s| *s.borrow_mut() = Some(name.to_string()));
    process_student();
}

fn main() -> std::io::Result<()> {
    let t1 = thread::Builder::new()
        .name("Thread-A".into())
        .spawn(|| process_thread("Alice"))?;
    let t2 = thread::Builder::new()
        .name("Thread-B".into())
        .spawn(|| process_thread("Bob"))?;
    t1.join().expect("Thread-A panicked");
    t2.join().expect("Thread-B panicked");
    // The main thread never bound a student: its slot is still empty.
    process_student();
    Ok(())
}
