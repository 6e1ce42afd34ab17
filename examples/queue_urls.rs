//! Mirrors the `proc_write` / `proc_read` listing of tutorial notes 002 and 004: two writer
//! processes put their URLs into one queue, one reader process prints them as they come, and
//! the parent terminates the reader once the writers are done.
//!
//! What differs in Rust: a typed `Queue<String>` shared by all three children. As in
//! the `queue` example, the reader acknowledges each URL, and the parent terminates it once all
//! six are acknowledged (the listing terminates it at once and can lose the last lines).
//! `--sleep-ms` bounds the writers' random pauses (default 1000).
//!
//!     cargo run --example queue_urls [-- --sleep-ms N]

mod common;

use multiproc::{Process, Queue};

fn proc_write((q, urls, sleep_ms): (Queue<String>, Vec<String>, u64)) {
    println!("Process({}) is writing...", std::process::id());
    let mut jitter = common::Jitter::new(sleep_ms, std::process::id().into());
    for url in urls {
        println!("Put {url} to queue...");
        q.put(&url).expect("the queue is open");
        jitter.sleep();
    }
}

fn proc_read((q, acks): (Queue<String>, Queue<()>)) {
    println!("Process({}) is reading...", std::process::id());
    loop {
        let url = q.get().expect("the queue is open");
        println!("Get {url} from queue.");
        acks.put(&()).expect("the parent listens");
    }
}

fn main() -> Result<(), multiproc::Error> {
    let sleep_ms: u64 = common::arg("--sleep-ms", 1000);
    let q = Queue::new()?;
    let acks = Queue::new()?;
    let urls = |range: std::ops::RangeInclusive<u32>| range.map(|i| format!("url_{i}")).collect();
    let mut writer1 = Process::spawn(proc_write, (q.try_clone()?, urls(1..=3), sleep_ms))?;
    let mut writer2 = Process::spawn(proc_write, (q.try_clone()?, urls(4..=6), sleep_ms))?;
    let mut reader = Process::spawn(proc_read, (q.try_clone()?, acks.try_clone()?))?;
    writer1.join()?;
    writer2.join()?;
    for _ in 0..6 {
        acks.get()?;
    }
    reader.terminate()?;
    let _ = reader.join();
    println!("reader terminated (exit code {:?})", reader.exitcode());
    Ok(())
}
