//! Tests for the examples: every program under `examples/` runs with small arguments and its
//! output is checked against what the tutorial listing it mirrors prints (issue 7).
//!
//! `cargo test` builds the examples before it runs any test; when this file runs alone
//! (`cargo test --test examples`), the examples are built first.

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

/// How long one example may run before the test kills it and fails.
const LIMIT: Duration = Duration::from_secs(120);

/// The directory cargo puts example binaries in, next to this test's own `deps/`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .join("examples")
}

/// Builds the examples once if this test binary was built without them.
fn ensure_built(name: &str) {
    static BUILD: Once = Once::new();
    if examples_dir().join(name).exists() {
        return;
    }
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--examples", "--quiet"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the examples failed");
    });
}

/// Runs example `name` with `args`, fails the test on a non-zero exit or after [`LIMIT`], and
/// returns its standard output.
fn run(name: &str, args: &[&str]) -> String {
    ensure_built(name);
    let mut child = Command::new(examples_dir().join(name))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).map(|_| out)
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the example") {
            break status;
        }
        if start.elapsed() > LIMIT {
            child.kill().expect("kill the example");
            child.wait().expect("reap the example");
            panic!("example {name} ran for more than {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().expect("reader thread").expect("utf-8 output");
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)
        .expect("utf-8 errors");
    assert!(
        status.success(),
        "example {name} failed ({status}); stdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// The number in `line` between `before` and the next character that is not a digit.
fn number_after(line: &str, before: &str) -> u32 {
    let at = line
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} not in {line:?}"))
        + before.len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {before:?} in {line:?}"))
}

/// The lines of `out` that contain `needle`.
fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

/// Every example in the tree is covered by a test here: adding one without a check fails.
#[test]
fn every_example_is_tested() {
    let tested: BTreeSet<&str> = TESTED.iter().copied().collect();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let present: BTreeSet<String> = std::fs::read_dir(dir)
        .expect("examples/ exists")
        .filter_map(|e| {
            let path = e.ok()?.path();
            (path.extension()? == "rs").then(|| path.file_stem()?.to_str().map(str::to_owned))?
        })
        .collect();
    let untested: Vec<_> = present
        .iter()
        .filter(|p| !tested.contains(p.as_str()))
        .collect();
    assert!(untested.is_empty(), "examples without a test: {untested:?}");
}

/// The examples this file checks, one test each below.
const TESTED: &[&str] = &[
    "hello",
    "fork",
    "process",
    "processes",
    "subprocess_call",
    "subprocess_communicate",
    "pipe",
    "thread",
    "threads_urls",
    "thread_subclass",
    "lock",
    "multicore",
    "thread_local",
    "coroutine",
    "coroutine_pool",
    "manager",
    "pool",
    "pool_reuse",
    "task_master",
    "task_worker",
    "image_master",
    "image_worker",
    "queue",
    "queue_urls",
    "rlock",
    "value_array",
];

#[test]
fn smoke() {
    let out = run("process", &[]);
    assert!(out.ends_with("Child process end.\n"), "{out}");
}

#[test]
fn hello() {
    let out = run("hello", &[]);
    for method in ["fork", "spawn", "forkserver"] {
        assert_eq!(
            lines_with(&out, &format!("{method}: pid ")).len(),
            1,
            "{out}"
        );
    }
    assert_eq!(lines_with(&out, "speed-up").len(), 2, "{out}");
    let reused = lines_with(&out, "100 pool tasks ran in ");
    assert!(
        number_after(reused[0], "ran in ") as usize <= multiproc::cpu_count(),
        "{out}"
    );
    assert!(out.contains("answered 3 messages"), "{out}");
    let fed = lines_with(&out, "a queue fed by two producer processes delivered");
    assert_eq!(fed.len(), 1, "{out}");
    for item in ["(1, 1)", "(1, 2)", "(1, 3)", "(2, 1)", "(2, 2)", "(2, 3)"] {
        assert!(fed[0].contains(item), "{out}");
    }
    for n in 1..=5 {
        assert!(
            out.contains(&format!("result: {n} * {n} = {}\n", n * n)),
            "{out}"
        );
    }
    assert!(out.ends_with("did 5 tasks\n"), "{out}");
}

#[test]
fn fork() {
    let out = run("fork", &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let parent = number_after(lines[0], "Process (");
    let created = lines_with(&out, "just created");
    let child_line = lines_with(&out, "I am child process");
    assert_eq!(number_after(created[0], "I ("), parent);
    let child = number_after(created[0], "child process (");
    assert_eq!(number_after(child_line[0], "child process ("), child);
    assert_eq!(number_after(child_line[0], "my parent is "), parent);
    assert_ne!(child, parent);
}

#[test]
fn process() {
    let out = run("process", &[]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let parent = number_after(lines[0], "Parent process ");
    assert_eq!(lines[1], "Child process will start.");
    assert_ne!(number_after(lines[2], "Run child process test ("), parent);
    assert_eq!(lines[3], "Child process end.");
}

#[test]
fn processes() {
    let out = run("processes", &[]);
    assert_eq!(lines_with(&out, "Process will start.").len(), 5, "{out}");
    let children: BTreeSet<(u32, u32)> = lines_with(&out, "Running...")
        .into_iter()
        .map(|l| (number_after(l, "Child process "), number_after(l, "(")))
        .collect();
    assert_eq!(children.len(), 5, "{out}");
    let names: BTreeSet<u32> = children.iter().map(|c| c.0).collect();
    assert_eq!(names, (0..5).collect(), "{out}");
    assert!(out.ends_with("Process end.\n"), "{out}");
}

#[test]
fn subprocess_call() {
    let out = run("subprocess_call", &[]);
    assert!(out.starts_with("$ getent hosts localhost\n"), "{out}");
    assert!(out.ends_with("Exit code: 0\n"), "{out}");
}

#[test]
fn subprocess_communicate() {
    let out = run("subprocess_communicate", &[]);
    assert_eq!(out, "$ sh\n6 * 7 = 42\nLinux\nExit code: 3\n");
}

#[test]
fn pipe() {
    let out = run("pipe", &["--sleep-ms", "5"]);
    let urls: Vec<String> = (0..10).map(|i| format!("url_{i}")).collect();
    let sent: Vec<&str> = lines_with(&out, "send: ");
    let received: Vec<&str> = lines_with(&out, "rev:");
    let tail = |lines: &[&str], sep: &str| -> Vec<String> {
        lines
            .iter()
            .map(|l| l.rsplit(sep).next().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(tail(&sent, "send: "), urls, "{out}");
    assert_eq!(tail(&received, "rev:"), urls, "{out}");
    let sender = number_after(sent[0], "Process(");
    let receiver = number_after(received[0], "Process(");
    assert_ne!(sender, receiver);
    assert!(out.ends_with("10 messages received\n"), "{out}");
}

#[test]
fn thread() {
    let out = run("thread", &["--sleep-ms", "1"]);
    let expected: String = std::iter::once("thread main is running...".to_string())
        .chain(std::iter::once(
            "thread LoopThread is running...".to_string(),
        ))
        .chain((1..=5).map(|n| format!("thread LoopThread >>> {n}")))
        .chain([
            "thread LoopThread ended.".into(),
            "thread main ended.".into(),
        ])
        .map(|l| l + "\n")
        .collect();
    assert_eq!(out, expected);
}

/// The checks shared by the two two-thread listings.
fn check_url_threads(out: &str) {
    assert!(out.starts_with("main is running...\n"), "{out}");
    for (name, urls) in [("Thread_1", [1, 2, 3]), ("Thread_2", [4, 5, 6])] {
        let visited: Vec<String> = lines_with(out, &format!("{name} ---->>> "))
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
            .collect();
        let expected: Vec<String> = urls.iter().map(|u| format!("url_{u}")).collect();
        assert_eq!(visited, expected, "{out}");
        assert_eq!(
            lines_with(out, &format!("Current {name} is running...")).len(),
            1
        );
        assert_eq!(lines_with(out, &format!("{name} ended.")).len(), 1);
    }
    assert!(out.ends_with("main ended.\n"), "{out}");
}

#[test]
fn threads_urls() {
    check_url_threads(&run("threads_urls", &["--sleep-ms", "5"]));
}

#[test]
fn thread_subclass() {
    let out = run("thread_subclass", &["--sleep-ms", "5"]);
    check_url_threads(&out);
    assert!(
        out.contains("Thread_1 visited 3 urls\nThread_2 visited 3 urls\n"),
        "{out}"
    );
}

#[test]
fn lock() {
    let out = run("lock", &["--rounds", "20000"]);
    assert_eq!(
        lines_with(&out, "without a lock: balance = ").len(),
        1,
        "{out}"
    );
    assert!(out.ends_with("with a lock:    balance = 0\n"), "{out}");
}

#[test]
fn multicore() {
    let out = run("multicore", &["--seconds", "0.2"]);
    let cpus = multiproc::cpu_count();
    assert!(
        out.starts_with(&format!("{cpus} CPUs: starting {cpus} busy threads")),
        "{out}"
    );
    assert_eq!(lines_with(&out, "s of CPU").len(), cpus, "{out}");
    // Only that CPU time was measured: how much depends on the machine's load.
    assert!(number_after(&out, "CPU use: ") > 0, "{out}");
}

#[test]
fn thread_local() {
    let out = run("thread_local", &[]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "Hello, Alice (in Thread-A)",
            "Hello, Bob (in Thread-B)",
            "No student bound in main"
        ]
    );
}

#[test]
fn coroutine() {
    let out = run("coroutine", &["--delay-ms", "100"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    // All three fetches start before any finishes: they run concurrently.
    assert!(
        lines[..3].iter().all(|l| l.starts_with("Visit --> ")),
        "{out}"
    );
    let mut sizes: Vec<u32> = lines[3..]
        .iter()
        .map(|l| {
            assert!(l.ends_with("(thread main)"), "{out}");
            number_after(l, "")
        })
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [25_482, 45_740, 47_445]);
}

#[test]
fn coroutine_pool() {
    let out = run("coroutine_pool", &["--delay-ms", "20"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    // Two at a time: the third visit starts only after a fetch has finished.
    let visits: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("Visit --> "))
        .collect();
    assert_eq!(visits.len(), 3, "{out}");
    let third_visit = visits[2];
    let first_done = lines
        .iter()
        .position(|l| l.contains("bytes received"))
        .expect("a fetch finished");
    assert!(first_done < third_visit, "{out}");
    let results = lines[6];
    let github = results
        .find("github.com/ --->finish")
        .expect("github result");
    let python = results
        .find("www.python.org/ --->finish")
        .expect("python result");
    assert!(
        github < python,
        "results come back in input order: {results}"
    );
    assert!(results.ends_with("/ --->finish\"]"), "{results}");
}

#[test]
fn manager() {
    let out = run("manager", &[]);
    for n in 1..=10u64 {
        assert!(out.contains(&format!("{n} * {n} = {}\n", n * n)), "{out}");
    }
    assert!(out.ends_with("10 tasks done by 2 workers\n"), "{out}");
}

#[test]
fn pool() {
    let out = run("pool", &["--max-sleep-ms", "50"]);
    let parent = number_after(&out, "Parent process ");
    let started: BTreeSet<(u32, u32)> = lines_with(&out, "Run task ")
        .into_iter()
        .map(|l| (number_after(l, "Run task "), number_after(l, "(")))
        .collect();
    assert_eq!(
        started.iter().map(|t| t.0).collect::<BTreeSet<_>>(),
        (0..5).collect()
    );
    let pids: BTreeSet<u32> = started.iter().map(|t| t.1).collect();
    assert!(pids.len() <= 4 && !pids.contains(&parent), "{out}");
    assert_eq!(lines_with(&out, " seconds.").len(), 5, "{out}");
    assert!(out.ends_with("All subprocesses done.\n"), "{out}");
}

#[test]
fn pool_reuse() {
    let out = run("pool_reuse", &["--max-sleep-ms", "20"]);
    let pids: BTreeSet<u32> = lines_with(&out, "is running...")
        .into_iter()
        .map(|l| number_after(l, "pid = "))
        .collect();
    assert!(!pids.is_empty() && pids.len() <= 3, "{out}");
    assert_eq!(lines_with(&out, " end.").len(), 5, "{out}");
    let last = out.lines().last().unwrap_or_default();
    assert_eq!(number_after(last, "ran in ") as usize, pids.len(), "{out}");
}

/// A program running in the background (a master, a Python listing) whose output lines are
/// collected as they come. Killed with its whole process group and reaped if the test ends
/// first: a Python master's `manager.start()` server is its child.
struct Background {
    child: std::process::Child,
    lines: mpsc::Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// One message from each reader thread when its stream has ended.
    ended: mpsc::Receiver<()>,
}

impl Background {
    fn start(mut command: Command) -> Background {
        use std::os::unix::process::CommandExt;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start a background program");
        let (tx, lines) = mpsc::channel();
        let (end_tx, ended) = mpsc::channel();
        let collect = |stream: Box<dyn Read + Send>, into: Arc<Mutex<String>>| {
            let tx = tx.clone();
            let end_tx = end_tx.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    into.lock().unwrap().push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
                let _ = end_tx.send(());
            });
        };
        let (stdout, stderr) = (Arc::default(), Arc::default());
        collect(
            Box::new(child.stdout.take().expect("piped")),
            Arc::clone(&stdout),
        );
        collect(
            Box::new(child.stderr.take().expect("piped")),
            Arc::clone(&stderr),
        );
        Background {
            child,
            lines,
            stdout,
            stderr,
            ended,
        }
    }

    /// The first output line containing `needle`, waited for up to [`LIMIT`].
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line with {needle:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout.lock().unwrap(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for the program to exit (up to [`LIMIT`]) and returns its stdout; fails the test
    /// if it failed.
    fn finish(mut self) -> String {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(start.elapsed() < LIMIT, "background program ran too long");
            std::thread::sleep(Duration::from_millis(10));
        };
        // The readers end at end of stream: once both have, every line is in.
        for _ in 0..2 {
            let left = LIMIT.saturating_sub(start.elapsed());
            assert!(
                self.ended.recv_timeout(left).is_ok(),
                "the program's output did not end within {LIMIT:?} (does a child of it hold it?)"
            );
        }
        let out = self.stdout.lock().unwrap().clone();
        assert!(
            status.success(),
            "background program failed ({status}); stdout:\n{out}\nstderr:\n{}",
            self.stderr.lock().unwrap()
        );
        out
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn example_command(name: &str, args: &[&str]) -> Command {
    ensure_built(name);
    let mut command = Command::new(examples_dir().join(name));
    command.args(args);
    command
}

/// The port in a `Listening on HOST:PORT` or `LISTENING PORT` line.
fn port_in(line: &str) -> String {
    line.rsplit([':', ' '])
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The master's results match the tasks it handed out: `Put task n` / `Result: n * n = n²`.
fn check_master(out: &str, prefix_put: &str) {
    let put: BTreeSet<u64> = lines_with(out, prefix_put)
        .into_iter()
        .map(|l| u64::from(number_after(l, prefix_put)))
        .collect();
    let results: BTreeSet<String> = lines_with(out, "Result: ")
        .into_iter()
        .map(|l| l.trim_start_matches("Result: ").to_string())
        .collect();
    let expected: BTreeSet<String> = put
        .iter()
        .map(|n| format!("{n} * {n} = {}", n * n))
        .collect();
    assert_eq!(lines_with(out, "Result: ").len(), 10, "{out}");
    assert_eq!(results, expected, "{out}");
}

#[test]
fn task_master_and_task_worker() {
    let master = Background::start(example_command(
        "task_master",
        &["--host", "127.0.0.1", "--port", "0"],
    ));
    let port = port_in(&master.wait_for("Listening on"));
    master.wait_for("Try get results...");
    let worker = run(
        "task_worker",
        &["--port", &port, "--sleep-ms", "0", "--wait", "2"],
    );
    assert_eq!(lines_with(&worker, "run task ").len(), 10, "{worker}");
    assert!(worker.ends_with("worker exit.\n"), "{worker}");
    let out = master.finish();
    check_master(&out, "Put task ");
    assert!(out.ends_with("master exit.\n"), "{out}");
    assert!(run("task_master", &["--help"]).contains("--authkey"));
    assert!(run("task_worker", &["--help"]).contains("--host"));
}

#[test]
fn image_master_and_image_worker() {
    for bounded in [false, true] {
        let mut args = vec!["--host", "127.0.0.1", "--port", "0"];
        if bounded {
            args.push("--bounded");
        }
        let master = Background::start(example_command("image_master", &args));
        let port = port_in(&master.wait_for("Listening on"));
        // The worker loops `while not task.empty()`, as the listing does: start it once the
        // tasks are in, or it finds the queue empty and is done at once.
        master.wait_for("try get result...");
        let worker = run("image_worker", &["--port", &port, "--sleep-ms", "0"]);
        assert_eq!(
            lines_with(&worker, "run task download ImageUrl_").len(),
            10,
            "{worker}"
        );
        assert!(worker.ends_with("worker exit.\n"), "{worker}");
        let out = master.finish();
        let results: Vec<&str> = lines_with(&out, "result is ");
        let expected: Vec<String> = (0..10)
            .map(|i| format!("result is ImageUrl_{i}--->success"))
            .collect();
        assert_eq!(results, expected, "{out}");
    }
    assert!(run("image_worker", &["--help"]).contains("--port"));
}

/// The Pythons to try the unmodified listings with: the machine's python3 (CPython 3.11 on
/// CI: the HMAC-MD5 handshake) and 3.12+ (the `{sha256}` handshake), looked up through pyenv
/// or PATH. A missing one fails the test unless `MULTIPROC_SKIP_PYTHON=1`.
#[track_caller]
fn pythons() -> Vec<String> {
    common::python3_with("multiprocessing.managers")
        .into_iter()
        .chain(common::cpythons(&[(3, 12), (3, 13)]))
        .map(|p| p.display().to_string())
        .collect()
}

fn listing(python: &str, port: &str, script: &str) -> Command {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("listings");
    let mut command = Command::new(python);
    command
        .arg(dir.join("run_listing.py"))
        .arg(port)
        .arg(dir.join(script));
    command
}

/// The unmodified Python `task_master.py` hands its tasks to the Rust `task_worker`.
#[test]
fn python_task_master_with_rust_task_worker() {
    for python in pythons() {
        let master = Background::start(listing(&python, "0", "task_master.py"));
        let port = port_in(&master.wait_for("LISTENING"));
        let worker = run(
            "task_worker",
            &["--port", &port, "--sleep-ms", "0", "--wait", "2"],
        );
        assert_eq!(
            lines_with(&worker, "run task ").len(),
            10,
            "{python}: {worker}"
        );
        let out = master.finish();
        check_master(&out, "Put task ");
        assert!(out.ends_with("master exit.\n"), "{python}: {out}");
    }
}

/// The unmodified Python `task_worker.py` works for the Rust `task_master`.
#[test]
fn rust_task_master_with_python_task_worker() {
    for python in pythons() {
        let master = Background::start(example_command(
            "task_master",
            &["--host", "127.0.0.1", "--port", "0"],
        ));
        let port = port_in(&master.wait_for("Listening on"));
        master.wait_for("Try get results...");
        let worker = Background::start(listing(&python, &port, "task_worker.py")).finish();
        assert_eq!(
            lines_with(&worker, "run task ").len(),
            10,
            "{python}: {worker}"
        );
        assert!(worker.ends_with("worker exit.\n"), "{python}: {worker}");
        check_master(&master.finish(), "Put task ");
    }
}

#[test]
fn queue() {
    let out = run("queue", &["--sleep-ms", "10"]);
    let got: Vec<&str> = lines_with(&out, "Get ");
    assert_eq!(
        got,
        [
            "Get A from queue.",
            "Get B from queue.",
            "Get C from queue."
        ],
        "{out}"
    );
    assert_eq!(lines_with(&out, "Put ").len(), 3, "{out}");
    assert!(
        out.ends_with("reader terminated (exit code Some(-15))\n"),
        "{out}"
    );
}

#[test]
fn queue_urls() {
    let out = run("queue_urls", &["--sleep-ms", "10"]);
    let got = |prefix: &str| -> Vec<String> {
        lines_with(&out, prefix)
            .iter()
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_string())
            .collect()
    };
    let mut gets = got("Get ");
    // Each writer's URLs arrive in its order; together, all six once.
    let order = |urls: &[String], of: &[&str]| -> Vec<String> {
        urls.iter()
            .filter(|u| of.contains(&u.as_str()))
            .cloned()
            .collect()
    };
    assert_eq!(
        order(&gets, &["url_1", "url_2", "url_3"]),
        ["url_1", "url_2", "url_3"]
    );
    assert_eq!(
        order(&gets, &["url_4", "url_5", "url_6"]),
        ["url_4", "url_5", "url_6"]
    );
    gets.sort();
    assert_eq!(
        gets,
        ["url_1", "url_2", "url_3", "url_4", "url_5", "url_6"],
        "{out}"
    );
    assert_eq!(lines_with(&out, "is writing...").len(), 2, "{out}");
    assert!(
        out.ends_with("reader terminated (exit code Some(-15))\n"),
        "{out}"
    );
}

#[test]
fn rlock() {
    let out = run("rlock", &[]);
    // Increments happen only under the lock: the numbers each thread sees never go down,
    // every value 0..4 is seen locked once before the count stops, and the total is 4.
    let locked: Vec<u32> = lines_with(&out, " locked, Number: ")
        .iter()
        .map(|l| number_after(l, "Number: "))
        .collect();
    let below_four: Vec<u32> = locked.iter().copied().filter(|&n| n < 4).collect();
    assert_eq!(below_four, [0, 1, 2, 3], "{out}");
    assert!(
        !lines_with(&out, "Thread_1 released, Number: 4").is_empty(),
        "{out}"
    );
    assert!(
        !lines_with(&out, "Thread_2 released, Number: 4").is_empty(),
        "{out}"
    );
    assert!(out.ends_with("final Number: 4\n"), "{out}");
}

#[test]
fn value_array() {
    let out = run("value_array", &[]);
    assert_eq!(out, "3.1415927\n[0, -1, -2, -3, -4, -5, -6, -7, -8, -9]\n");
}
