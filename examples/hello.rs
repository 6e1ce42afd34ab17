//! The flagship demo: start processes with each start method, show their PIDs and results,
//! and talk to one over a duplex pipe.
//!
//!     cargo run --example hello

use multiproc::{current_process, Connection, Pipe, Process, StartMethod};

/// Runs in the child: reports who it is and does a little work.
fn work(n: u64) -> (u32, String, u64) {
    let me = current_process();
    let sum_of_squares = (1..=n).map(|i| i * i).sum();
    (me.pid, me.name, sum_of_squares)
}

/// Runs in the child: answers each request on its end of the pipe until the parent hangs up.
fn shout(conn: Connection) -> usize {
    let mut answered = 0;
    while let Ok(line) = conn.recv::<String>() {
        conn.send(&line.to_uppercase()).expect("parent went away");
        answered += 1;
    }
    answered
}

fn main() -> Result<(), multiproc::Error> {
    println!(
        "parent pid {} ({})",
        std::process::id(),
        current_process().name
    );

    for (i, method) in StartMethod::all().into_iter().enumerate() {
        let n = 10 * (i as u64 + 1);
        let mut child = Process::builder().start_method(method).spawn(work, n)?;
        let (pid, name, sum) = child.join()?;
        assert_eq!(pid, child.pid());
        println!(
            "{method:>10}: child pid {pid} ({name}) says 1²+…+{n}² = {sum}, exit code {:?}",
            child.exitcode()
        );
    }

    let (here, there) = Pipe::new()?;
    let mut child = Process::spawn(shout, there)?;
    for word in ["hello", "from", "the parent"] {
        here.send(&word)?;
        println!("sent {word:?}, got back {:?}", here.recv::<String>()?);
    }
    drop(here);
    println!(
        "pipe child {} answered {} messages",
        child.pid(),
        child.join()?
    );
    Ok(())
}
