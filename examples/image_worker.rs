//! Mirrors `taskWorker.py` of tutorial note 004: a worker connects to the image master (port
//! 8001, authkey `qiye`) and, while the task queue is not empty, takes a URL, "downloads" it
//! and reports `URL--->success`.
//!
//! What differs in Rust: `while not task.empty()` followed by `task.get(True, timeout=5)` is
//! racy with several workers (another may take the last task in between); the `get_timeout`
//! here turns that race into a clean exit instead of an exception. The listing sleeps a second
//! per task; `--sleep-ms` sets that (default 1000).
//!
//!     cargo run --example image_worker -- [--host 127.0.0.1] [--port 8001] [--authkey qiye]

mod common;

use std::time::Duration;

use multiproc::managers::Manager;
use multiproc::Error;

const HELP: &str = "image_worker: takes URLs from the image master's get_task_queue while it is
not empty and puts 'URL--->success' on get_result_queue.

  --host H       the master's address (default 127.0.0.1)
  --port N       its TCP port (default 8001)
  --authkey K    shared secret (default qiye)
  --sleep-ms N   pause per task, as the listing's time.sleep(1) (default 1000)";

fn main() -> Result<(), Error> {
    if common::flag("--help") {
        println!("{HELP}");
        return Ok(());
    }
    let host: String = common::arg("--host", "127.0.0.1".to_string());
    let port: u16 = common::arg("--port", 8001);
    let authkey: String = common::arg("--authkey", "qiye".to_string());
    let sleep_ms: u64 = common::arg("--sleep-ms", 1000);

    println!("Connect to server {host}...");
    let m = Manager::connect((host.as_str(), port), authkey.as_bytes())?;
    let task = m.get_queue::<String>("get_task_queue")?;
    let result = m.get_queue::<String>("get_result_queue")?;
    loop {
        // `while not task.empty()`; a master that has shut down counts as empty.
        match task.is_empty() {
            Ok(false) => {}
            Ok(true) | Err(Error::Disconnected) => break,
            Err(e) => return Err(e),
        }
        let image_url = match task.get_timeout(Duration::from_secs(5)) {
            Ok(url) => url,
            // Another worker took the last one between `empty` and `get`.
            Err(Error::Empty | Error::Disconnected) => break,
            Err(e) => return Err(e),
        };
        println!("run task download {image_url}...");
        std::thread::sleep(Duration::from_millis(sleep_ms));
        match result.put(&format!("{image_url}--->success")) {
            Ok(()) => {}
            // The master had all its results and shut down before our put was answered.
            Err(Error::Disconnected) => break,
            Err(e) => return Err(e),
        }
    }
    println!("worker exit.");
    Ok(())
}
