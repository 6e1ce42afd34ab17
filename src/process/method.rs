//! [`StartMethod`]: how a child process comes to exist, and the program-wide default
//! (`set_start_method` / `get_start_method`).

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

/// How a child process is started (CPython's start methods).
///
/// | method | how | start+join cost* | threads in the parent |
/// |---|---|---|---|
/// | [`Fork`](Self::Fork) | `fork()`; the child runs `f` in a copy of the parent | lowest (≈ raw `fork`) | unsafe: locks held by other threads stay locked in the child |
/// | [`Spawn`](Self::Spawn) | re-executes the current binary, which runs `f` before `main` | highest (an `exec` and the loader) | safe |
/// | [`Forkserver`](Self::Forkserver) | a server re-executed once, single-threaded, forks each child | near fork | safe |
///
/// \* measured by `cargo bench --bench process`; see the README.
///
/// The default is **forkserver**: it is as safe as spawn when the parent has threads (the
/// test harness, a tokio runtime, a logger thread…) and costs close to fork, because the
/// server is a small, single-threaded process whose fork is cheap whatever the size of the
/// parent. CPython 3.14 made the same choice for the same reason. Change it per process with
/// [`ProcessBuilder::start_method`](crate::ProcessBuilder::start_method) or for the whole
/// program with [`set_start_method`].
///
/// # Examples
///
/// ```
/// use multiproc::{Process, StartMethod};
///
/// fn double(x: i32) -> i32 { x * 2 }
///
/// for method in [StartMethod::Fork, StartMethod::Spawn, StartMethod::Forkserver] {
///     let mut p = Process::builder().start_method(method).spawn(double, 21).unwrap();
///     assert_eq!(p.join().unwrap(), 42);
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartMethod {
    /// `fork()`: fastest, but only safe when the parent has no other threads, or when the child
    /// touches nothing another thread might have held locked (stdout, the environment, …).
    ///
    /// The child gets its arguments from memory, unpickled (as in CPython). It closes its copies
    /// of the parent's other connection ends, so that their peers see `Disconnected` when the
    /// parent drops them; an end reached in the child through a global instead of an argument
    /// is therefore unusable there. A fork child does not flush stdout at exit and does not
    /// record panic locations (both take locks another thread may have held).
    Fork,
    /// Re-execute the current binary (`posix_spawn` of `/proc/self/exe`); the child runs `f`
    /// from a pre-main hook and never runs `main`.
    Spawn,
    /// Ask this process's forkserver (started by self-exec on first use) to fork the child.
    Forkserver,
}

impl StartMethod {
    /// CPython's name for the method: `"fork"`, `"spawn"` or `"forkserver"`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::StartMethod::Forkserver.name(), "forkserver");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            StartMethod::Fork => "fork",
            StartMethod::Spawn => "spawn",
            StartMethod::Forkserver => "forkserver",
        }
    }

    /// Every method this platform supports, as `multiprocessing.get_all_start_methods()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::StartMethod::all().len(), 3);
    /// ```
    pub fn all() -> [StartMethod; 3] {
        [
            StartMethod::Forkserver,
            StartMethod::Spawn,
            StartMethod::Fork,
        ]
    }

    fn to_u8(self) -> u8 {
        match self {
            StartMethod::Fork => 0,
            StartMethod::Spawn => 1,
            StartMethod::Forkserver => 2,
        }
    }

    fn from_u8(v: u8) -> StartMethod {
        match v {
            0 => StartMethod::Fork,
            1 => StartMethod::Spawn,
            _ => StartMethod::Forkserver,
        }
    }
}

impl fmt::Display for StartMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(2);

/// Sets the start method used when a [`ProcessBuilder`](crate::ProcessBuilder) names none
/// (`multiprocessing.set_start_method`).
///
/// # Examples
///
/// ```
/// use multiproc::{get_start_method, set_start_method, StartMethod};
///
/// set_start_method(StartMethod::Spawn);
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// set_start_method(StartMethod::Forkserver);
/// ```
pub fn set_start_method(method: StartMethod) {
    DEFAULT_METHOD.store(method.to_u8(), Ordering::Relaxed);
}

/// The start method used when a [`ProcessBuilder`](crate::ProcessBuilder) names none;
/// [`StartMethod::Forkserver`] unless changed by [`set_start_method`].
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::Forkserver);
/// ```
pub fn get_start_method() -> StartMethod {
    StartMethod::from_u8(DEFAULT_METHOD.load(Ordering::Relaxed))
}
