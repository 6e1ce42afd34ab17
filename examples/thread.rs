//! Mirrors the `threading.Thread(target=loop, name='LoopThread')` listing (tutorial notes 001 and
//! 003): a named thread counts to five, the main thread waits for it.
//!
//! What differs in Rust: `std::thread::Builder::name` names the thread, `thread::current().name()`
//! reads it back (the main thread is called `main`, Python's is `MainThread`), and `join` returns
//! the thread's result. `--sleep-ms` sets the pause between counts (default 1000, as the listing's
//! `time.sleep(1)`).
//!
//!     cargo run --example thread [-- --sleep-ms N]

mod common;

use std::thread;
use std::time::Duration;

fn run_loop(pause: Duration) {
    println!("thread {} is running...", common::thread_name());
    for n in 1..=5 {
        println!("thread {} >>> {n}", common::thread_name());
        thread::sleep(pause);
    }
    println!("thread {} ended.", common::thread_name());
}

fn main() -> std::io::Result<()> {
    let pause = Duration::from_millis(common::arg("--sleep-ms", 1000));
    println!("thread {} is running...", common::thread_name());
    let t = thread::Builder::new()
        .name("LoopThread".into())
        .spawn(move || run_loop(pause))?;
    t.join().expect("LoopThread panicked");
    println!("thread {} ended.", common::thread_name());
    Ok(())
}
