//! Mirrors the `Pipe()` listing of tutorial note 004: `proc_send` sends `url_0` … `url_9` down one
//! end, `proc_recv` prints what arrives at the other.
//!
//! What differs in Rust: the listing's reader loops forever, so its `p2.join()` never returns.
//! Here the receiver stops cleanly when every sending end is gone: `recv` returns
//! `Error::Disconnected` instead of hanging. The random sleeps take `--sleep-ms` as their upper
//! bound (default 1000, as `random.random()` seconds).
//!
//!     cargo run --example pipe [-- --sleep-ms N]

mod common;

use multiproc::{Connection, Pipe, Process};

fn proc_send((pipe, urls, sleep_ms): (Connection, Vec<String>, u64)) {
    let mut jitter = common::Jitter::new(sleep_ms, std::process::id().into());
    for url in urls {
        println!("Process({}) send: {url}", std::process::id());
        pipe.send(&url).expect("the receiver went away");
        jitter.sleep();
    }
}

fn proc_recv((pipe, sleep_ms): (Connection, u64)) -> usize {
    let mut jitter = common::Jitter::new(sleep_ms, std::process::id().into());
    let mut received = 0;
    while let Ok(url) = pipe.recv::<String>() {
        println!("Process({}) rev:{url}", std::process::id());
        received += 1;
        jitter.sleep();
    }
    received
}

fn main() -> Result<(), multiproc::Error> {
    let sleep_ms = common::arg("--sleep-ms", 1000);
    let (send_end, recv_end) = Pipe::new()?;
    let urls = (0..10).map(|i| format!("url_{i}")).collect();
    let mut p1 = Process::spawn(proc_send, (send_end, urls, sleep_ms))?;
    let mut p2 = Process::spawn(proc_recv, (recv_end, sleep_ms))?;
    // The children hold their own copies of the ends; the parent's were moved into the arguments
    // and closed once sent, so the receiver sees Disconnected when the sender finishes.
    p1.join()?;
    let received = p2.join()?;
    println!("{received} messages received");
    Ok(())
}
