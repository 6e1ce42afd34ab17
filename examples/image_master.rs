//! Mirrors `taskManager.py` of tutorial note 004 (the distributed image-crawler example): a
//! manager on port 8001 with authkey `qiye` serves a task queue and a result queue; the master
//! puts ten `ImageUrl_i` tasks and prints what the workers report.
//!
//! What differs in Rust: the listing is Python 2 (`print` statements, a `str` authkey), so it
//! cannot run unmodified on a Python 3 interpreter; this example does what it does and speaks
//! the manager protocol of CPython 3. `--bounded` gives the queues a capacity of ten, as the
//! listing's Windows variant does (`Queue.Queue(task_number)`). `--port 0` picks a free port.
//!
//!     cargo run --example image_master -- [--port 8001] [--authkey qiye] [--bounded]

mod common;

use std::time::Duration;

use multiproc::managers::{Manager, ManagerServer};

const HELP: &str = "image_master: serves get_task_queue / get_result_queue over TCP, puts
ImageUrl_0..ImageUrl_9, prints the results.

  --host H       address to listen on (default 0.0.0.0)
  --port N       TCP port (default 8001; 0 picks a free one, printed at start)
  --authkey K    shared secret (default qiye)
  --tasks N      how many URLs (default 10)
  --bounded      queues of capacity --tasks, as the listing's Windows variant";

fn main() -> Result<(), multiproc::Error> {
    if common::flag("--help") {
        println!("{HELP}");
        return Ok(());
    }
    let host: String = common::arg("--host", "0.0.0.0".to_string());
    let port: u16 = common::arg("--port", 8001);
    let authkey: String = common::arg("--authkey", "qiye".to_string());
    let tasks: usize = common::arg("--tasks", 10);
    let capacity = if common::flag("--bounded") { tasks } else { 0 };

    let mut server = ManagerServer::bind((host.as_str(), port), authkey.as_bytes())?;
    server.register_queue("get_task_queue", capacity);
    server.register_queue("get_result_queue", capacity);
    let mut manager = server.start()?;
    println!("Listening on {}", manager.address());
    let client = Manager::connect(manager.address(), authkey.as_bytes())?;
    let task = client.get_queue::<String>("get_task_queue")?;
    let result = client.get_queue::<String>("get_result_queue")?;
    for url in (0..tasks).map(|i| format!("ImageUrl_{i}")) {
        println!("put task {url} ...");
        task.put(&url)?;
    }
    println!("try get result...");
    for _ in 0..tasks {
        println!("result is {}", result.get_timeout(Duration::from_secs(10))?);
    }
    drop((task, result, client));
    manager.shutdown()?;
    Ok(())
}
