//! Mirrors `task_worker.py` of the distributed-processes listings (tutorial notes 000–003): a
//! worker connects to the master's manager (port 5000, authkey `abc`), takes numbers from the
//! task queue and puts `n * n = r` on the result queue.
//!
//! What differs in Rust: `Manager::connect` speaks CPython's manager protocol, so this worker
//! serves an unmodified `task_master.py` as well as our `task_master`. The listing takes at
//! most ten tasks and catches `Queue.Empty` (misspelt there); this worker takes tasks until the
//! queue stays empty for `--wait` seconds (default 1, as `task.get(timeout=1)`), then exits
//! cleanly (as it does when the master shuts down meanwhile). The listing sleeps a second per task; `--sleep-ms` sets that (default 1000).
//!
//!     cargo run --example task_worker -- [--host 127.0.0.1] [--port 5000] [--authkey abc]

mod common;

use std::time::Duration;

use multiproc::managers::Manager;
use multiproc::Error;

const HELP: &str = "task_worker: takes numbers from a master's get_task_queue and puts
'n * n = r' on its get_result_queue, until the task queue stays empty.

  --host H       the master's address (default 127.0.0.1)
  --port N       its TCP port (default 5000)
  --authkey K    shared secret (default abc)
  --wait S       seconds an empty queue is waited on before exiting (default 1)
  --sleep-ms N   pause after each task, as the listing's time.sleep(1) (default 1000)";

fn main() -> Result<(), Error> {
    if common::flag("--help") {
        println!("{HELP}");
        return Ok(());
    }
    let host: String = common::arg("--host", "127.0.0.1".to_string());
    let port: u16 = common::arg("--port", 5000);
    let authkey: String = common::arg("--authkey", "abc".to_string());
    let wait: f64 = common::arg("--wait", 1.0);
    let sleep_ms: u64 = common::arg("--sleep-ms", 1000);

    println!("Connect to server {host}...");
    let m = Manager::connect((host.as_str(), port), authkey.as_bytes())?;
    let task = m.get_queue::<i64>("get_task_queue")?;
    let result = m.get_queue::<String>("get_result_queue")?;
    loop {
        match task.get_timeout(Duration::from_secs_f64(wait)) {
            Ok(n) => {
                println!("run task {n} * {n}...");
                let r = format!("{n} * {n} = {}", n * n);
                std::thread::sleep(Duration::from_millis(sleep_ms));
                match result.put(&r) {
                    Ok(()) => {}
                    // The master had what it wanted and shut its manager down before our put
                    // was answered.
                    Err(Error::Disconnected) => {
                        println!("master has shut down.");
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(Error::Empty) => {
                println!("task queue is empty.");
                break;
            }
            // The master got its results and shut its manager down while we waited.
            Err(Error::Disconnected) => {
                println!("master has shut down.");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    println!("worker exit.");
    Ok(())
}
