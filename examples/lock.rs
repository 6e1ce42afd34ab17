//! Mirrors the bank-balance listing of tutorial notes 001 and 003: two threads add and subtract
//! 5 and 8 from a shared `balance` 100 000 times; without a lock the result drifts from 0, with
//! `threading.Lock` it stays 0.
//!
//! What differs in Rust: the listing's unsynchronised version does not compile — two threads
//! cannot both hold `&mut balance`. The nearest legal imitation is an atomic read followed by a
//! separate atomic write, which loses updates just as Python's `balance = balance + n` does, so
//! the first run usually ends away from 0 (how far depends on the machine). The locked version
//! wraps the read-modify-write in a `Mutex`, and the compiler makes sure nobody touches
//! `balance` without holding it. `--rounds` sets the loop count (default 100 000).
//!
//!     cargo run --example lock [-- --rounds N]

mod common;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::thread;

/// `change_it` without a lock: each step reads, then writes, so another thread's update that
/// lands in between is lost.
fn change_it_racy(balance: &AtomicI64, n: i64) {
    let b = balance.load(Ordering::Relaxed);
    balance.store(b + n, Ordering::Relaxed);
    let b = balance.load(Ordering::Relaxed);
    balance.store(b - n, Ordering::Relaxed);
}

/// `change_it` under the lock: the guard is the only way to reach the balance.
fn change_it_locked(balance: &Mutex<i64>, n: i64) {
    let mut b = balance.lock().expect("a thread panicked holding the lock");
    *b += n;
    *b -= n;
}

fn main() {
    let rounds: u32 = common::arg("--rounds", 100_000);

    let balance = AtomicI64::new(0);
    thread::scope(|s| {
        for n in [5, 8] {
            let balance = &balance;
            s.spawn(move || (0..rounds).for_each(|_| change_it_racy(balance, n)));
        }
    });
    println!(
        "without a lock: balance = {}",
        balance.load(Ordering::Relaxed)
    );

    let balance = Mutex::new(0);
    thread::scope(|s| {
        for n in [5, 8] {
            let balance = &balance;
            s.spawn(move || (0..rounds).for_each(|_| change_it_locked(balance, n)));
        }
    });
    let balance = balance
        .into_inner()
        .expect("a thread panicked holding the lock");
    println!("with a lock:    balance = {balance}");
    assert_eq!(balance, 0);
}
