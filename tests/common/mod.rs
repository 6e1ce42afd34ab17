//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::time::{Duration, Instant};

pub use multiproc::StartMethod;

pub mod family;
pub mod kills;

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
pub fn with(method: StartMethod) -> multiproc::Builder {
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
