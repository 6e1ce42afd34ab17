//! Mirrors the `threading.RLock` listing of tutorial note 004: two threads take turns
//! incrementing a shared `num` under a re-entrant lock until it reaches 4, printing
//! `locked` / `released` each time.
//!
//! What differs in Rust: the standard library's re-entrant lock is not stable yet, so this
//! uses `parking_lot::ReentrantMutex` (a re-entrant mutex hands out shared references only,
//! hence the `Cell` inside). The listing never takes the lock twice in one thread, though that
//! is the point of an RLock; here each turn also takes it a second time, nested, to show that
//! the owner does not deadlock on itself. A cross-process re-entrant lock is the subject of
//! the crate's synchronisation primitives, not of this thread listing.
//!
//!     cargo run --example rlock

mod common;

use std::cell::Cell;
use std::sync::Arc;
use std::thread;

use parking_lot::ReentrantMutex;

fn run(lock: &ReentrantMutex<Cell<u32>>) {
    let name = common::thread_name();
    loop {
        let num = lock.lock();
        println!("{name} locked, Number: {}", num.get());
        if num.get() >= 4 {
            drop(num);
            // Read after release, as the listing's print does (another thread may hold it).
            println!("{name} released, Number: {}", lock.lock().get());
            break;
        }
        {
            // Taken again by its owner: a plain mutex would deadlock here.
            let again = lock.lock();
            again.set(again.get() + 1);
        }
        println!("{name} released, Number: {}", num.get());
        drop(num);
    }
}

fn main() -> std::io::Result<()> {
    let lock = Arc::new(ReentrantMutex::new(Cell::new(0u32)));
    let threads: Vec<_> = ["Thread_1", "Thread_2"]
        .into_iter()
        .map(|name| {
            let lock = Arc::clone(&lock);
            thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&lock))
        })
        .collect::<Result<_, _>>()?;
    for t in threads {
        t.join().expect("a thread panicked");
    }
    println!("final Number: {}", lock.lock().get());
    Ok(())
}
