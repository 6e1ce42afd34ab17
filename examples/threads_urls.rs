//! Mirrors the `thread_run(urls)` listing of tutorial note 004: two named threads, `Thread_1` and
//! `Thread_2`, each work through their own list of URLs with random pauses.
//!
//! What differs in Rust: the URL lists move into the threads (no shared mutable state), and the
//! random pauses come from a tiny generator in `examples/common`. `--sleep-ms` bounds the
//! pauses (default 1000, as `random.random()` seconds).
//!
//!     cargo run --example threads_urls [-- --sleep-ms N]

mod common;

use std::thread;

fn thread_run(urls: Vec<&'static str>, mut jitter: common::Jitter) {
    println!("Current {} is running...", common::thread_name());
    for url in urls {
        println!("{} ---->>> {url}", common::thread_name());
        jitter.sleep();
    }
    println!("{} ended.", common::thread_name());
}

fn main() -> std::io::Result<()> {
    let sleep_ms = common::arg("--sleep-ms", 1000);
    println!("{} is running...", common::thread_name());
    let t1 = thread::Builder::new()
        .name("Thread_1".into())
        .spawn(move || {
            thread_run(
                vec!["url_1", "url_2", "url_3"],
                common::Jitter::new(sleep_ms, 1),
            )
        })?;
    let t2 = thread::Builder::new()
        .name("Thread_2".into())
        .spawn(move || {
            thread_run(
                vec!["url_4", "url_5", "url_6"],
                common::Jitter::new(sleep_ms, 2),
            )
        })?;
    t1.join().expect("Thread_1 panicked");
    t2.join().expect("Thread_2 panicked");
    println!("{} ended.", common::thread_name());
    Ok(())
}
