//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

pub use multiproc::StartMethod;

pub mod family;
pub mod kills;
pub mod reporting;

/// Defines one test per start method from a single body, as CPython runs each `_Test*` class
/// under fork, spawn and forkserver.
#[macro_export]
macro_rules! each_method {
    ($(#[$attr:meta])* fn $name:ident($method:ident: StartMethod) $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($method: $crate::common::StartMethod) $body

            #[test]
            fn fork() {
                body($crate::common::StartMethod::Fork)
            }

            #[test]
            fn spawn() {
                body($crate::common::StartMethod::Spawn)
            }

            #[test]
            fn forkserver() {
                body($crate::common::StartMethod::Forkserver)
            }
        }
    };
}

/// A builder for `method`.
pub fn with(method: StartMethod) -> multiproc::ProcessBuilder {
    multiproc::Process::builder().start_method(method)
}

/// Polls `cond` every 10 ms until it holds or `limit` passes (a hang guard, not a speed test).
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` still exists in any state (a zombie counts).
pub fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The state letter of `pid` from /proc (`Z` for a zombie), if it exists.
pub fn pid_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// The number of open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sleeps for `ms` milliseconds; a child body.
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Set to `1` to let the tests that need python3 or a particular CPython version pass when it
/// is missing (they say so on stdout). Without it they fail: a missing interpreter is never a
/// silent pass. CI (`.ci/run`) does not set it.
pub const SKIP_PYTHON: &str = "MULTIPROC_SKIP_PYTHON";

/// Whether the caller opted out of the Python tests' requirements (see [`SKIP_PYTHON`]).
pub fn python_opted_out() -> bool {
    std::env::var_os(SKIP_PYTHON).is_some_and(|v| v == "1")
}

/// Fails the test because `what` is missing, or, with [`SKIP_PYTHON`]`=1`, says that the
/// check did not run and returns.
#[track_caller]
pub fn python_missing(what: &str) {
    if python_opted_out() {
        println!("SKIPPED ({SKIP_PYTHON}=1): {what}");
    } else {
        panic!("{what}; install it, or set {SKIP_PYTHON}=1 to skip the tests that need it");
    }
}

/// The machine's `python3`, checked to import `module`; `None` only when it is missing and the
/// caller opted out ([`python_missing`]).
#[track_caller]
pub fn python3_with(module: &str) -> Option<std::path::PathBuf> {
    let ok = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some("python3".into())
    } else {
        python_missing(&format!("python3 (with {module}) is not installed"));
        None
    }
}

/// The `(major, minor)` of the CPython at `path`, if it runs.
fn python_version(path: &std::path::Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(path)
        .args(["-c", "import sys; print(*sys.version_info[:2])"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse().ok());
    Some((parts.next()??, parts.next()??))
}

/// The CPython interpreters this machine has: pyenv's (`$PYENV_ROOT`, else `pyenv root`, then
/// `versions/*/bin/python3`) and `python3.N` on PATH, one per `(major, minor)`, the newest
/// patch release of each.
pub fn installed_pythons() -> &'static std::collections::BTreeMap<(u32, u32), std::path::PathBuf> {
    static FOUND: std::sync::OnceLock<std::collections::BTreeMap<(u32, u32), std::path::PathBuf>> =
        std::sync::OnceLock::new();
    FOUND.get_or_init(look_up_pythons)
}

fn look_up_pythons() -> std::collections::BTreeMap<(u32, u32), std::path::PathBuf> {
    use std::path::PathBuf;
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            let out = std::process::Command::new("pyenv")
                .arg("root")
                .stderr(std::process::Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let root = String::from_utf8(out.stdout).ok()?;
            Some(PathBuf::from(root.trim()))
        });
    // Pyenv's directory names are versions (`3.12.1`): sorted by number, the newest patch of a
    // minor version comes last and wins.
    let mut versions: Vec<(Vec<u32>, PathBuf)> = root
        .and_then(|root| std::fs::read_dir(root.join("versions")).ok())
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let number: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let python = entry.path().join("bin").join("python3");
            Some((number?, python)).filter(|(_, p)| p.exists())
        })
        .collect();
    versions.sort();
    let mut found = std::collections::BTreeMap::new();
    for (_, python) in versions {
        if let Some(version) = python_version(&python) {
            found.insert(version, python);
        }
    }
    for minor in 6..=20 {
        let name = PathBuf::from(format!("python3.{minor}"));
        if !found.contains_key(&(3, minor)) {
            if let Some(version @ (3, m)) = python_version(&name) {
                if m == minor {
                    found.insert(version, name);
                }
            }
        }
    }
    found
}

/// A CPython for each of `versions` (`(3, 12)`, …), looked up with [`installed_pythons`]; a
/// missing one fails the test unless the caller opted out ([`python_missing`]), and is then
/// left out.
#[track_caller]
pub fn cpythons(versions: &[(u32, u32)]) -> Vec<std::path::PathBuf> {
    let installed = installed_pythons();
    let mut found = Vec::new();
    for &(major, minor) in versions {
        match installed.get(&(major, minor)) {
            Some(path) => found.push(path.clone()),
            None => python_missing(&format!(
                "CPython {major}.{minor} was not found (looked in pyenv's versions and for \
                 python{major}.{minor} on PATH)"
            )),
        }
    }
    found
}

/// How long a test may block before its hang guard fails it: generous, so a loaded 2-CPU
/// machine never trips it, and short enough that a hang fails CI instead of stalling it.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Runs `body` on a thread of its own and fails the test if it has not finished within
/// [`HANG_LIMIT`] (a hang guard, not a speed test). A panic in `body` fails the test as usual.
#[track_caller]
pub fn hang_guard(body: impl FnOnce() + Send + 'static) {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let body = std::thread::spawn(move || {
        body();
        let _ = done.send(());
    });
    match finished.recv_timeout(HANG_LIMIT) {
        Ok(()) => body.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match body.join() {
            Ok(()) => {}
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("hang guard: the test was still blocked after {HANG_LIMIT:?}")
        }
    }
}

/// A child process (a Python peer) that is killed and reaped however the test ends.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This thread's kernel id, for [`await_thread_sleeping`]: a thread sends it over a channel
/// just before it blocks.
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// The second half of a handshake with a thread of this process that said (by sending its
/// [`gettid`]) it is about to block: waits until the kernel shows it asleep (state `S`), so it
/// has reached the blocking call. Fails the test after [`HANG_LIMIT`].
#[track_caller]
pub fn await_thread_sleeping(tid: i32) {
    let stat = format!("/proc/self/task/{tid}/stat");
    let asleep = eventually(HANG_LIMIT, || state_in(&stat) == Some('S'));
    assert!(asleep, "thread {tid} never blocked");
}

/// Waits until thread `tid` of this process sleeps in `futex` (system call 202 on x86-64,
/// 98 on aarch64): stricter than [`await_thread_sleeping`] when the thread also sleeps
/// elsewhere on its way (e.g. a served call that reported itself is then waiting on its
/// condition variable, not reading its socket). Fails the test after [`HANG_LIMIT`].
#[track_caller]
pub fn await_thread_in_futex(tid: i32) {
    let futex = if cfg!(target_arch = "aarch64") {
        "98 "
    } else {
        "202 "
    };
    let path = format!("/proc/self/task/{tid}/syscall");
    let waiting = eventually(HANG_LIMIT, || {
        std::fs::read_to_string(&path).is_ok_and(|s| s.starts_with(futex))
    });
    assert!(waiting, "thread {tid} never waited in futex");
}

/// As [`await_thread_sleeping`], for the main thread of child process `pid` (after it said it
/// is about to block).
#[track_caller]
pub fn await_process_sleeping(pid: u32) {
    let asleep = eventually(HANG_LIMIT, || pid_state(pid) == Some('S'));
    assert!(asleep, "process {pid} never blocked");
}

/// The state letter in a `/proc/…/stat` file.
fn state_in(stat: &str) -> Option<char> {
    let stat = std::fs::read_to_string(stat).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}
