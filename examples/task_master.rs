//! Mirrors `task_master.py` of the distributed-processes listings (tutorial notes 000–003): a
//! master serves a task queue and a result queue over TCP with `BaseManager` (port 5000,
//! authkey `abc`), puts ten random numbers, and waits up to ten seconds for each result that
//! workers on other machines send back.
//!
//! What differs in Rust: the manager is a `ManagerServer` that speaks CPython's own wire
//! protocol, so an unmodified `task_worker.py` can work for this master (and our `task_worker`
//! for the Python master). Like the listing's `manager.start()`, the server runs in a child
//! process, and the master uses the queues through proxies, as a remote worker does.
//! `--port 0` picks a free port; the master prints the address it listens on.
//!
//!     cargo run --example task_master -- [--port 5000] [--authkey abc] [--tasks 10]

mod common;

use std::time::Duration;

use multiproc::managers::{Manager, ManagerServer};

const HELP: &str = "task_master: serves get_task_queue / get_result_queue over TCP, puts random
numbers, prints the results workers send back.

  --host H       address to listen on (default 0.0.0.0, all interfaces, as the listing)
  --port N       TCP port (default 5000; 0 picks a free one, printed at start)
  --authkey K    shared secret (default abc)
  --tasks N      how many numbers to hand out (default 10)
  --timeout S    seconds to wait for each result (default 10, as result.get(timeout=10))";

fn main() -> Result<(), multiproc::Error> {
    if common::flag("--help") {
        println!("{HELP}");
        return Ok(());
    }
    let host: String = common::arg("--host", "0.0.0.0".to_string());
    let port: u16 = common::arg("--port", 5000);
    let authkey: String = common::arg("--authkey", "abc".to_string());
    let tasks: usize = common::arg("--tasks", 10);
    let timeout: f64 = common::arg("--timeout", 10.0);

    let mut server = ManagerServer::bind((host.as_str(), port), authkey.as_bytes())?;
    server.register_queue("get_task_queue", 0);
    server.register_queue("get_result_queue", 0);
    let mut manager = server.start()?;
    println!("Listening on {}", manager.address());

    let client = Manager::connect(manager.address(), authkey.as_bytes())?;
    let task = client.get_queue::<i64>("get_task_queue")?;
    let result = client.get_queue::<String>("get_result_queue")?;
    let mut jitter = common::Jitter::new(10_000, std::process::id().into());
    for _ in 0..tasks {
        let n = jitter.next().as_millis() as i64;
        println!("Put task {n}...");
        task.put(&n)?;
    }
    println!("Try get results...");
    for _ in 0..tasks {
        let r = result.get_timeout(Duration::from_secs_f64(timeout))?;
        println!("Result: {r}");
    }
    drop((task, result, client));
    manager.shutdown()?;
    println!("master exit.");
    Ok(())
}
