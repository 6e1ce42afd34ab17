//! Mirrors the `Queue` listing of tutorial notes 001 and 003: one process writes `A`, `B`, `C`
//! into a queue with random pauses; another reads in an endless loop and prints each value;
//! the parent waits for the writer, then terminates the reader.
//!
//! What differs in Rust: the queue is a `Queue<String>`, typed, passed to each child as
//! its argument. The listing terminates the reader as soon as the writer is done, so on a busy
//! machine its last `Get …` line can be lost; here the reader also acknowledges each value on
//! a second queue, and the parent terminates it once all three are acknowledged, which is
//! what the listing means. `--sleep-ms` bounds the random pauses (default 1000).
//!
//!     cargo run --example queue [-- --sleep-ms N]

mod common;

use multiproc::{Process, Queue};

fn write((q, sleep_ms): (Queue<String>, u64)) {
    println!("Process to write: {}", std::process::id());
    let mut jitter = common::Jitter::new(sleep_ms, std::process::id().into());
    for value in ["A", "B", "C"] {
        println!("Put {value} to queue...");
        q.put(&value.to_string()).expect("the queue is open");
        jitter.sleep();
    }
}

fn read((q, acks): (Queue<String>, Queue<()>)) {
    println!("Process to read: {}", std::process::id());
    loop {
        let value = q.get().expect("the queue is open");
        println!("Get {value} from queue.");
        acks.put(&()).expect("the parent listens");
    }
}

fn main() -> Result<(), multiproc::Error> {
    let sleep_ms: u64 = common::arg("--sleep-ms", 1000);
    let q = Queue::new()?;
    let acks = Queue::new()?;
    let mut pw = Process::spawn(write, (q.try_clone()?, sleep_ms))?;
    let mut pr = Process::spawn(read, (q.try_clone()?, acks.try_clone()?))?;
    pw.join()?;
    for _ in 0..3 {
        acks.get()?;
    }
    // The reader loops for ever: stop it, as the listing does with `pr.terminate()`.
    pr.terminate()?;
    let _ = pr.join();
    println!("reader terminated (exit code {:?})", pr.exitcode());
    Ok(())
}
