//! A task farm over TCP, the `BaseManager` tutorial in Rust: a master serves a task queue and
//! a result queue; workers in other processes (or on other machines, or written in Python with
//! `BaseManager.register('get_task_queue')` and `m.connect()`) take tasks and put answers.
//!
//! ```text
//! cargo run --example manager
//! ```

use multiproc::managers::{Manager, ManagerServer};
use multiproc::{ByteBuf, Process};

/// A worker: connects with the key, squares numbers until it gets `None`.
fn worker((address, authkey): (String, ByteBuf)) -> u32 {
    let manager = Manager::connect(address.as_str(), &authkey).expect("connect");
    let tasks = manager
        .get_queue::<Option<u64>>("get_task_queue")
        .expect("tasks");
    let results = manager
        .get_queue::<String>("get_result_queue")
        .expect("results");
    let mut done = 0;
    while let Some(n) = tasks.get().expect("get") {
        results.put(&format!("{n} * {n} = {}", n * n)).expect("put");
        done += 1;
    }
    done
}

fn main() -> Result<(), multiproc::Error> {
    let authkey = b"abc";
    let mut server = ManagerServer::bind("127.0.0.1:0", authkey)?;
    let tasks = server.register_queue("get_task_queue", 0);
    let results = server.register_queue("get_result_queue", 0);
    let server = server.start_thread()?;
    println!("serving on {}", server.address());

    let workers: Vec<_> = (0..2)
        .map(|_| {
            let args = (
                server.address().to_string(),
                ByteBuf::from(authkey.to_vec()),
            );
            Process::spawn(worker, args)
        })
        .collect::<Result<_, _>>()?;
    for n in 1..=10u64 {
        tasks.put(&Some(n))?;
    }
    for _ in &workers {
        tasks.put(&None::<u64>)?;
    }
    for _ in 0..10 {
        println!("{}", results.get::<String>()?);
    }
    let mut total = 0;
    for mut w in workers {
        total += w.join()?;
    }
    println!("{total} tasks done by 2 workers");
    server.shutdown();
    Ok(())
}
