//! Mirrors the `class myThread(threading.Thread)` listing of tutorial note 004: the same two
//! threads as `threads_urls`, but each is an object that owns its name, its URLs and its `run`.
//!
//! What differs in Rust: there is no inheritance, so "a thread subclass" is a type with a `run`
//! method and a `start` that hands the value to a named `std::thread` and returns a handle;
//! `join` gives the object back when the thread is done. `--sleep-ms` bounds the pauses.
//!
//!     cargo run --example thread_subclass [-- --sleep-ms N]

mod common;

use std::thread::{self, JoinHandle};

/// The listing's `myThread`: a unit of work that knows how to run itself on its own thread.
struct UrlThread {
    name: String,
    urls: Vec<String>,
    jitter: common::Jitter,
    visited: usize,
}

impl UrlThread {
    fn new(name: &str, urls: &[&str], jitter: common::Jitter) -> Self {
        UrlThread {
            name: name.to_string(),
            urls: urls.iter().map(|u| u.to_string()).collect(),
            jitter,
            visited: 0,
        }
    }

    /// `Thread.start()`: run `self.run()` on a new thread named after the object.
    fn start(self) -> std::io::Result<JoinHandle<Self>> {
        thread::Builder::new()
            .name(self.name.clone())
            .spawn(move || {
                let mut me = self;
                me.run();
                me
            })
    }

    /// `Thread.run()`, overridden.
    fn run(&mut self) {
        let name = common::thread_name();
        println!("Current {name} is running...");
        for url in &self.urls {
            println!("{name} ---->>> {url}");
            self.visited += 1;
            self.jitter.sleep();
        }
        println!("{name} ended.");
    }
}

fn main() -> std::io::Result<()> {
    let sleep_ms = common::arg("--sleep-ms", 1000);
    let main_name = thread::current().name().unwrap_or("main").to_string();
    println!("{main_name} is running...");
    let t1 = UrlThread::new(
        "Thread_1",
        &["url_1", "url_2", "url_3"],
        common::Jitter::new(sleep_ms, 1),
    );
    let t2 = UrlThread::new(
        "Thread_2",
        &["url_4", "url_5", "url_6"],
        common::Jitter::new(sleep_ms, 2),
    );
    let (h1, h2) = (t1.start()?, t2.start()?);
    let done = [h1.join(), h2.join()];
    for t in done {
        let t = t.expect("a URL thread panicked");
        println!("{} visited {} urls", t.name, t.visited);
    }
    println!("{main_name} ended.");
    Ok(())
}
