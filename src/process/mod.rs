//! `Process`: run a function in a new OS process and get its result back.

pub(crate) mod child;
mod reports;
pub(crate) mod runtime;
pub(crate) mod start;

pub(crate) use reports::{ForkReports, Ticket};

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{self, ChildSetup, Failure, Header, Report, Trampoline};
use crate::codec::{self, FdTable};
use crate::connection::Connection;
use crate::sys::{self, WaitStatus};
use crate::Error;
use child::ChildShared;
use runtime::Identity;

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
/// [`Builder::start_method`] or for the whole program with [`set_start_method`].
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

/// Sets the start method used when a [`Builder`] names none (`multiprocessing.set_start_method`).
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

/// The start method used when a [`Builder`] names none; [`StartMethod::Forkserver`] unless
/// changed by [`set_start_method`].
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::Forkserver);
/// ```
pub fn get_start_method() -> StartMethod {
    StartMethod::from_u8(DEFAULT_METHOD.load(Ordering::Relaxed))
}

/// The secret of a process family (CPython's `current_process().authkey`): 32 random bytes
/// made by the first process (from the kernel's `getrandom`) and inherited by every process it
/// starts, under every start method (fork copies it; spawn and forkserver children get it in
/// their private bootstrap message, never through the environment).
///
/// multiproc uses it to authenticate the function references that travel between processes
/// (a task's function, a [`Barrier`](crate::Barrier)'s action): each carries an HMAC-SHA256
/// tag made with this key, and a reference whose tag does not verify is refused with
/// [`Error::UnauthenticatedFunction`] instead of being called. `Debug` does not show the bytes.
///
/// # Examples
///
/// ```
/// fn key(_: ()) -> [u8; 32] { *multiproc::current_process().authkey().as_bytes() }
///
/// let mine = *multiproc::current_process().authkey().as_bytes();
/// let mut child = multiproc::Process::spawn(key, ()).unwrap();
/// assert_eq!(child.join().unwrap(), mine);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct AuthKey([u8; 32]);

impl AuthKey {
    /// The length of a key in bytes.
    pub const LEN: usize = 32;

    /// A key from the kernel's random number generator.
    pub(crate) fn random() -> AuthKey {
        let mut key = [0u8; AuthKey::LEN];
        if sys::random_bytes(&mut key).is_err() {
            // Not reached on Linux >= 3.17 (getrandom) or with /dev/urandom readable: then
            // std's hasher keys (themselves from the OS) are the best source left.
            use std::hash::{BuildHasher, Hasher};
            for chunk in key.chunks_mut(8) {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(sys::getpid() as u32);
                chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
            }
        }
        AuthKey(key)
    }

    /// A key with these bytes (as received in a bootstrap message).
    pub(crate) fn from_bytes(bytes: [u8; AuthKey::LEN]) -> AuthKey {
        AuthKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; AuthKey::LEN] {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

/// A process as `current_process()` and `active_children()` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The OS process id.
    pub pid: u32,
    /// Its name: `"MainProcess"`, `"Process-1"`, `"Process-1:2"`, or what the builder set.
    pub name: String,
    /// Whether it dies with its parent.
    pub daemon: bool,
    /// The process family's key (the same for a parent and every child it starts).
    authkey: AuthKey,
}

impl ProcessInfo {
    /// The key of this process's family (CPython's `Process.authkey`), inherited by children.
    /// See [`AuthKey`].
    ///
    /// # Examples
    ///
    /// ```
    /// let key = multiproc::current_process().authkey();
    /// assert_ne!(key.as_bytes(), &[0u8; 32]);
    /// ```
    pub fn authkey(&self) -> AuthKey {
        self.authkey
    }
}

/// The calling process: its pid, name, daemon flag and family key
/// (`multiprocessing.current_process()`).
///
/// # Examples
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id());
/// assert!(!me.daemon);
/// ```
pub fn current_process() -> ProcessInfo {
    let rt = runtime::runtime();
    ProcessInfo {
        pid: rt.pid() as u32,
        name: rt.identity().name.clone(),
        daemon: rt.identity().daemon,
        authkey: rt.identity().authkey,
    }
}

/// The pid of the process that started this one with multiproc, or `None` in a process that
/// multiproc did not start (CPython's `parent_process()` is `None` there too). For a forkserver
/// child this is the process that asked for it, not the server.
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::parent_pid(), None);
/// fn parent(_: ()) -> Option<u32> { multiproc::parent_pid() }
/// let mut p = multiproc::Process::spawn(parent, ()).unwrap();
/// assert_eq!(p.join().unwrap(), Some(std::process::id()));
/// ```
pub fn parent_pid() -> Option<u32> {
    runtime::runtime().identity().parent_pid
}

/// The start method that started this process, or `None` in a process multiproc did not start.
///
/// # Examples
///
/// ```
/// assert_eq!(multiproc::current_start_method(), None);
/// ```
pub fn current_start_method() -> Option<StartMethod> {
    runtime::runtime().identity().start_method
}

/// The children of this process that are still running (`multiprocessing.active_children()`).
/// Children that have finished are reaped on the way, so calling this also clears zombies.
///
/// # Examples
///
/// ```
/// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
/// let mut p = multiproc::Process::spawn(nap, 200).unwrap();
/// assert!(multiproc::active_children().iter().any(|c| c.pid == p.pid()));
/// p.join().unwrap();
/// assert!(!multiproc::active_children().iter().any(|c| c.pid == p.pid()));
/// ```
pub fn active_children() -> Vec<ProcessInfo> {
    runtime::runtime().active_children()
}

/// The number of CPUs the system has (`multiprocessing.cpu_count()`), at least 1.
///
/// # Examples
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    num_cpus::get().max(1)
}

/// Configures a process before it starts: start method, name, daemon flag.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, StartMethod};
///
/// fn greet(who: String) -> String { format!("hello, {who}") }
///
/// let mut p = Process::builder()
///     .name("greeter")
///     .start_method(StartMethod::Spawn)
///     .daemon(true)
///     .spawn(greet, "world".to_string())
///     .unwrap();
/// assert_eq!(p.name(), "greeter");
/// assert_eq!(p.join().unwrap(), "hello, world");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    method: Option<StartMethod>,
    name: Option<String>,
    daemon: Option<bool>,
}

impl Builder {
    /// A builder with every setting at its default.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> Builder {
        self.method = Some(method);
        self
    }

    /// The process name (default: `Process-N`, numbered per parent, as in CPython).
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child dies with its parent (default: the calling process's own flag, so
    /// `false` in a main program). A daemon child is killed (SIGKILL) as soon as its parent
    /// exits, however the parent ends. A non-daemon child keeps running, as in CPython; join it.
    pub fn daemon(mut self, daemon: bool) -> Builder {
        self.daemon = Some(daemon);
        self
    }

    /// Starts `f(args)` in a new process.
    ///
    /// `f` is a plain function pointer (a closure that captures nothing coerces to one);
    /// `args` and the result travel pickled, so any serde type works, and handles such as a
    /// [`Connection`] inside `args` arrive working in the child.
    ///
    /// # Errors
    /// [`Error::Serialize`] if `args` cannot be pickled (checked before any process starts);
    /// [`Error::Os`] if the OS refuses to start the process.
    pub fn spawn<A, R>(self, f: fn(A) -> R, args: A) -> Result<Process<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let rt = runtime::runtime();
        let method = self.method.unwrap_or_else(get_start_method);
        let name = self.name.unwrap_or_else(|| rt.next_child_name());
        let daemon = self.daemon.unwrap_or(rt.identity().daemon);

        // A fork child that is no daemon would only close its copy: skip the dup (and the
        // child's close), two system calls on every start.
        let alive = if method == StartMethod::Fork && !daemon {
            None
        } else {
            let reader = rt.alive_reader().and_then(|fd| fd.try_clone_to_owned());
            Some(reader.map_err(Error::os("pipe"))?)
        };
        let setup = ChildSetup {
            runtime: runtime::prepare(Identity {
                name: name.clone(),
                daemon,
                parent_pid: Some(rt.pid() as u32),
                start_method: Some(method),
                authkey: rt.identity().authkey,
            }),
            daemon,
            alive,
        };
        // Everything that can fail on the caller's input fails here, before a process exists.
        let (started, source, ticket) = if method == StartMethod::Fork {
            // The child has the arguments in memory: they are checked, not pickled (as in
            // CPython's fork), and the handles inside them stay open in the child.
            let keep = codec::scan_handles(&args)?;
            let (started, ticket) =
                start::fork::start(rt, &keep, setup, move || bootstrap::call(f, args))?;
            (started, ReportSource::Ticket, Some(ticket))
        } else {
            // Default-sized buffers: the child's report is small or travels in a memfd, and a
            // large bootstrap message gets a larger buffer below. Sizing costs system calls.
            let (parent_end, child_end) = sys::seqpacket_pair().map_err(Error::os("socketpair"))?;
            let conn = Connection::from_fd(parent_end);
            let parent_end_fd = conn.as_fd().ok_or(Error::Closed)?;
            let mut fds: Vec<OwnedFd> = Vec::new();
            let args = codec::encode_in(&args, &mut fds)?;
            let nonce = new_nonce();
            let header = Header {
                nonce,
                exe: sys::exe_identity().map_err(Error::os("stat /proc/self/exe"))?,
                entry: bootstrap::Entry::new(
                    bootstrap::trampoline::<A, R> as Trampoline,
                    f as usize,
                ),
                authkey: *rt.identity().authkey.as_bytes(),
                parent_pid: rt.pid(),
                daemon,
                start_method: method,
                name: name.clone(),
            };
            fds.extend(setup.alive);
            let message = BootstrapMessage {
                header: header.to_bytes(),
                args,
                fds,
            };
            // A message that fits in the socket buffer can go before the child exists: a
            // forkserver child then starts work right after its fork, without waiting for us to
            // wake up from the server's reply.
            if message.len() > EARLY_MESSAGE_MAX {
                // Best effort: fewer, larger records for large arguments.
                let _ = sys::set_send_buffer_size(parent_end_fd, crate::connection::SEND_BUFFER);
            }
            let sent_early =
                method == StartMethod::Forkserver && message.len() <= EARLY_MESSAGE_MAX;
            if sent_early {
                message.send(&conn)?;
            }
            let started = if method == StartMethod::Spawn {
                start::spawn::start(child_end, nonce)?
            } else {
                start::forkserver::start(rt, child_end, &conn)?
            };
            if let Err(e) = if sent_early {
                Ok(())
            } else {
                message.send(&conn)
            } {
                // The child cannot run without its message: do not leave it waiting.
                let _ = sys::pidfd_send_signal(started.pidfd.as_fd(), libc::SIGKILL);
                if method == StartMethod::Spawn {
                    let _ = sys::waitid_pidfd(started.pidfd.as_fd(), true);
                }
                return Err(e);
            }
            (started, ReportSource::Socket(conn), None)
        };
        let child = Arc::new(ChildShared::new(
            started.pid,
            started.pidfd,
            started.status_socket,
            ticket,
            name,
            daemon,
        ));
        rt.register(child.clone());
        Ok(Process {
            child,
            source,
            report: None,
            joined: false,
            method,
            args_type: std::any::type_name::<A>(),
            _result: PhantomData,
        })
    }
}

/// The bootstrap message of a spawn or forkserver child, encoded before the child exists:
/// the header's length (4 bytes, little-endian), the header, the pickled arguments; the
/// descriptors of the handles in the arguments, then the alive pipe.
struct BootstrapMessage {
    header: Vec<u8>,
    args: Vec<u8>,
    fds: Vec<OwnedFd>,
}

/// Bootstrap messages up to this size are sent before a forkserver child exists (they fit in
/// the socket buffer, so the send cannot block).
const EARLY_MESSAGE_MAX: usize = 64 * 1024;

impl BootstrapMessage {
    fn len(&self) -> usize {
        4 + self.header.len() + self.args.len()
    }

    fn send(&self, conn: &Connection) -> Result<(), Error> {
        let header_len = (self.header.len() as u32).to_le_bytes();
        match conn.send_parts(&[&header_len, &self.header, &self.args], &self.fds) {
            // A child that died before reading its message is reported by `join`.
            Ok(()) | Err(Error::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn new_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    // 63 bits: serde-pickle writes larger integers as Python longs it then will not read
    // back into a u64.
    h.finish() >> 1
}

/// A running (or finished) child process that will produce an `R`.
///
/// Made by [`Process::spawn`] or [`Builder::spawn`]. The names follow
/// `multiprocessing.Process`: `pid`, `name`, `is_alive`, `join`, `terminate`, `kill`,
/// `exitcode`, `sentinel`.
///
/// Dropping a handle without joining it neither kills nor waits for the child: it keeps
/// running (a daemon until its parent exits), and a background reaper collects its exit status
/// so that it never lingers as a zombie.
///
/// # Examples
///
/// ```
/// use multiproc::Process;
///
/// fn square(x: u64) -> u64 { x * x }
///
/// let mut child = Process::spawn(square, 12).unwrap();
/// println!("started {} as pid {}", child.name(), child.pid());
/// assert_eq!(child.join().unwrap(), 144);
/// assert_eq!(child.exitcode(), Some(0));
/// ```
pub struct Process<R> {
    child: Arc<ChildShared>,
    /// Where the child's report comes from, until it was read.
    source: ReportSource,
    report: Option<Report>,
    joined: bool,
    method: StartMethod,
    args_type: &'static str,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.child.pid())
            .field("name", &self.name())
            .field("start_method", &self.method)
            .field("exitcode", &self.exitcode())
            .finish()
    }
}

impl Process<()> {
    /// Starts `f(args)` in a new process with the default settings; see [`Builder::spawn`].
    ///
    /// # Errors
    /// As [`Builder::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// fn add((a, b): (i32, i32)) -> i32 { a + b }
    /// let mut p = multiproc::Process::spawn(add, (2, 3)).unwrap();
    /// assert_eq!(p.join().unwrap(), 5);
    /// ```
    pub fn spawn<A, R>(f: fn(A) -> R, args: A) -> Result<Process<R>, Error>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Builder::new().spawn(f, args)
    }

    /// A [`Builder`] to set the start method, name or daemon flag.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<R> Process<R> {
    /// The child's OS process id.
    pub fn pid(&self) -> u32 {
        self.child.pid() as u32
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        self.child.name()
    }

    /// Whether the child dies with its parent.
    pub fn daemon(&self) -> bool {
        self.child.info().daemon
    }

    /// The method that started it.
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// Whether the child is still running. A finished child is reaped by this call.
    pub fn is_alive(&self) -> bool {
        self.child.is_running()
    }

    /// The exit code with CPython's meaning: `None` while running, `Some(n)` after
    /// `exit(n)` (0 after a normal return, 1 after a panic), `Some(-N)` if killed by signal `N`.
    pub fn exitcode(&self) -> Option<i32> {
        let status = match self.child.try_status() {
            Some(status) => Some(status),
            // Ended, but a forkserver has not reported the status yet: it does so promptly
            // (or is gone, and the status is lost), so wait rather than say "still running".
            None if !self.child.is_running() => self.child.wait(None).ok().flatten(),
            None => None,
        };
        status.map(|s| match s {
            WaitStatus::Exited(code) => code,
            WaitStatus::Signaled(sig) => -sig,
        })
    }

    /// A descriptor that becomes readable when the child exits (a pidfd), for `poll` loops
    /// (CPython's `sentinel`).
    pub fn sentinel(&self) -> BorrowedFd<'_> {
        self.child.pidfd()
    }

    /// Sends `SIGTERM` (CPython's `terminate`). Does nothing if the child has already been
    /// reaped; the pidfd rules out signalling a recycled pid.
    ///
    /// # Errors
    /// [`Error::Os`] if the signal cannot be sent.
    pub fn terminate(&self) -> Result<(), Error> {
        self.child
            .signal(libc::SIGTERM)
            .map_err(Error::os("pidfd_send_signal"))
    }

    /// Sends `SIGKILL` (CPython's `kill`).
    ///
    /// # Errors
    /// [`Error::Os`] if the signal cannot be sent.
    pub fn kill(&self) -> Result<(), Error> {
        self.child
            .signal(libc::SIGKILL)
            .map_err(Error::os("pidfd_send_signal"))
    }
}

impl<R: DeserializeOwned> Process<R> {
    /// Waits for the child to finish and returns its result.
    ///
    /// # Errors
    /// [`Error::Panicked`] (with the message), [`Error::Signaled`], [`Error::Exited`] when the
    /// child ended without a result; [`Error::Deserialize`] / [`Error::Serialize`] when the
    /// arguments or the result did not survive pickling; [`Error::Bootstrap`] when the child
    /// could not run the function; [`Error::AlreadyJoined`] on a second call;
    /// [`Error::Interrupted`] if [`interrupt_blocked_calls`](crate::interrupt_blocked_calls) is
    /// called while it waits (the child is untouched and the handle can be joined again).
    pub fn join(&mut self) -> Result<R, Error> {
        self.finish(None)
    }

    /// Like [`join`](Self::join), but waits at most `timeout`. On [`Error::Timeout`] the child
    /// is untouched and the handle can be joined again; `Duration::ZERO` just checks.
    ///
    /// # Errors
    /// As `join`, plus [`Error::Timeout`].
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R, Error> {
        // A timeout too large to add to `now` waits for ever.
        self.finish(Instant::now().checked_add(timeout))
    }

    fn finish(&mut self, deadline: Option<Instant>) -> Result<R, Error> {
        if self.joined {
            return Err(Error::AlreadyJoined { pid: self.pid() });
        }
        match &self.source {
            ReportSource::Socket(conn) => {
                self.report = await_report(conn, &self.child, deadline)?;
                self.source = ReportSource::Taken;
            }
            ReportSource::Ticket => {
                self.report = await_fork_report(&self.child, deadline)?;
                self.source = ReportSource::Taken;
            }
            ReportSource::Taken => {}
        }
        // With a report in hand the child has ended and the result does not depend on its
        // status, which a forkserver reports a moment later (`exitcode` waits for it).
        let status = if self.report.is_some() {
            None
        } else {
            match self.child.wait(deadline).map_err(Error::os("waitid"))? {
                Some(status) => Some(status),
                None => return Err(Error::Timeout),
            }
        };
        self.joined = true;
        runtime::runtime().unregister(self.child.pid());
        self.outcome(status)
    }

    fn outcome(&mut self, status: Option<WaitStatus>) -> Result<R, Error> {
        let pid = self.pid();
        match self.report.take() {
            Some(Report::Returned(frame, fds)) => {
                codec::decode_in(&frame[1..], &mut FdTable::new(fds))
            }
            Some(Report::Failed(failure)) => Err(match failure {
                Failure::Panicked { message, location } => Error::Panicked {
                    pid,
                    message,
                    location,
                },
                Failure::ArgsUndecodable(reason) => Error::Deserialize {
                    type_name: self.args_type,
                    reason,
                },
                Failure::ResultUnencodable(reason) => Error::Serialize {
                    type_name: std::any::type_name::<R>(),
                    reason,
                },
                Failure::Refused(reason) => Error::Bootstrap { pid, reason },
                Failure::Unauthenticated => Error::UnauthenticatedFunction {
                    what: "the bootstrap message",
                },
            }),
            None => Err(match status {
                Some(WaitStatus::Signaled(signal)) => Error::Signaled { pid, signal },
                Some(WaitStatus::Exited(code)) => Error::Exited { pid, code },
                // Not reached: without a report `finish` waits for the status.
                None => Error::Exited {
                    pid,
                    code: child::STATUS_LOST,
                },
            }),
        }
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        // Closing our end makes a child blocked on writing a large result fail and exit.
        self.source = ReportSource::Taken;
        if self.child.needs_reaping() {
            runtime::runtime().reap_later(self.child.clone());
        } else {
            runtime::runtime().unregister(self.child.pid());
        }
    }
}

/// Where a child's report comes from.
enum ReportSource {
    /// The child's own socket (spawn, forkserver).
    Socket(Connection),
    /// The fork ticket in the child's shared state (see `reports`).
    Ticket,
    /// Already read (or given up on, when the handle is dropped).
    Taken,
}

/// The fork child's counterpart of [`await_report`]: waits for the child to end, draining the
/// shared overflow socket meanwhile (a child blocked on it would never end otherwise), then
/// collects its report from its slot or the stash.
fn await_fork_report(
    child: &ChildShared,
    deadline: Option<Instant>,
) -> Result<Option<Report>, Error> {
    let Some(ticket) = child.ticket() else {
        return Ok(None);
    };
    // Interruptible from here on (see `interrupt_blocked_calls`).
    let since = sys::OnSignal::caller();
    let watched = [
        std::os::fd::AsRawFd::as_raw_fd(&child.pidfd()),
        std::os::fd::AsRawFd::as_raw_fd(&ticket.reports().recv_fd()),
    ];
    loop {
        let timeout = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up, so that a wait never ends just before the deadline.
                i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
            }
        };
        let ready = sys::poll_readable_or(&watched, timeout, since).map_err(Error::os("poll"))?;
        if ready.contains(&1) {
            ticket.reports().drain(None);
        }
        if ready.contains(&0) {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout);
        }
    }
    // Reap it now: the status is known from here on.
    child.wait(None).map_err(Error::os("waitid"))?;
    match ticket.collect() {
        Some((frame, fds)) => bootstrap::parse_report(frame, fds).map(Some),
        None => Ok(None),
    }
}

/// Waits for the child to end, then reads its report if it sent one. A child never blocks on
/// writing its report (large results travel in a memfd, see `bootstrap`), so the exit is the
/// one event to wait for; a stray copy of the child's socket in some other process cannot
/// delay it either, as it could delay end of stream.
fn await_report(
    conn: &Connection,
    child: &ChildShared,
    deadline: Option<Instant>,
) -> Result<Option<Report>, Error> {
    if !child.wait_ended(deadline).map_err(Error::os("waitid"))? {
        return Err(Error::Timeout);
    }
    let conn_fd = conn.as_fd().ok_or(Error::Closed)?;
    if !sys::wait_readable(conn_fd, Some(Instant::now())).map_err(Error::os("poll"))? {
        return Ok(None);
    }
    match conn.recv_raw() {
        Ok((frame, fds)) => bootstrap::parse_report(frame, fds).map(Some),
        Err(_) => Ok(None),
    }
}

/// What a start method hands back: the child's pid and pidfd, and for forkserver children the
/// socket on which the server reports the exit status.
pub(crate) struct Started {
    pub(crate) pid: libc::pid_t,
    pub(crate) pidfd: OwnedFd,
    pub(crate) status_socket: Option<OwnedFd>,
}

impl Started {
    /// A child of this very process (fork, spawn): we hold its pidfd and reap it ourselves.
    /// If no pidfd can be had, the child is killed and reaped rather than left untracked.
    pub(crate) fn own_child(pid: libc::pid_t) -> Result<Started, Error> {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => Ok(Started {
                pid,
                pidfd,
                status_socket: None,
            }),
            Err(e) => {
                // ESRCH: already gone and reaped by someone else (SIGCHLD ignored); its pid may
                // be recycled, so it must not be signalled.
                if e.raw_os_error() != Some(libc::ESRCH) {
                    sys::kill_and_reap(pid);
                }
                Err(Error::Os {
                    op: "pidfd_open",
                    source: e,
                })
            }
        }
    }
}
