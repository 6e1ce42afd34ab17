//! The server: accepts connections, authenticates them, and serves control requests and
//! proxy calls, one thread per connection.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::auth::{self, AuthConfig, ChallengeForm};
use super::peer;
use super::queue::ServedQueue;
use super::referent::{PyException, Referent};
use super::wire::{self, FrameReader, Incoming, Request};
use crate::pickle::{Limits, Value};
use crate::process::{Process, StartMethod};
use crate::Error;

/// Makes an object from `create`'s constructor arguments.
type Factory = Arc<
    dyn Fn(Vec<Value>, Vec<(String, Value)>) -> Result<Arc<dyn Referent>, PyException>
        + Send
        + Sync,
>;
type LogHook = Arc<dyn Fn(&str) + Send + Sync>;

/// Default cap on a frame after the handshake.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

struct Config {
    auth: AuthConfig,
    registry: HashMap<String, Factory>,
    max_frame: usize,
    max_connections: usize,
    handshake_timeout: Duration,
    limits: Limits,
    log: LogHook,
}

/// A manager server: CPython's `BaseManager` on the serving side, speaking CPython's wire
/// protocol (see the [module docs](crate::managers)).
///
/// Bind it, register what it serves, then run it: [`serve_forever`](Self::serve_forever) on
/// this thread, [`start_thread`](Self::start_thread) in the background, or
/// [`start`](Self::start) in a child process.
///
/// # Examples
///
/// ```
/// use multiproc::managers::{Manager, ManagerServer};
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"secret").unwrap();
/// let tasks = server.register_queue("get_task_queue", 0);
/// let server = server.start_thread().unwrap();
///
/// let client = Manager::connect(server.address(), b"secret").unwrap();
/// let q = client.get_queue::<i64>("get_task_queue").unwrap();
/// q.put(&42).unwrap();
/// assert_eq!(tasks.get::<i64>().unwrap(), 42);
/// server.shutdown();
/// ```
pub struct ManagerServer {
    listener: TcpListener,
    config: Config,
}

impl std::fmt::Debug for ManagerServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerServer")
            .field("address", &self.listener.local_addr().ok())
            .field("auth", &self.config.auth)
            .field("typeids", &self.config.registry.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ManagerServer {
    /// Binds a TCP listener on `address` (port 0 picks a free port; see
    /// [`address`](Self::address)) guarded by `authkey`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the address cannot be bound (e.g. it is in use);
    /// [`Error::InvalidArgument`] when it is not a TCP `host:port` address.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// assert_ne!(server.address().port(), 0);
    /// ```
    pub fn bind(address: impl ToSocketAddrs, authkey: &[u8]) -> Result<ManagerServer, Error> {
        let listener =
            TcpListener::bind(&wire::resolve(address)?[..]).map_err(Error::os("bind"))?;
        Ok(ManagerServer {
            listener,
            config: Config {
                auth: AuthConfig {
                    key: authkey.to_vec(),
                    ..AuthConfig::default()
                },
                registry: HashMap::new(),
                max_frame: DEFAULT_MAX_FRAME,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                handshake_timeout: wire::HANDSHAKE_TIMEOUT,
                limits: Limits::default(),
                log: Arc::new(|line| eprintln!("multiproc manager: {line}")),
            },
        })
    }

    /// The address the server listens on.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// assert!(server.address().ip().is_loopback());
    /// ```
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Serves objects made by `factory` under `typeid` (CPython's `register(typeid,
    /// callable)`): each `create` calls it. A factory returning the same `Arc` every time
    /// serves one shared object, as `callable=lambda: q` does in Python.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use multiproc::managers::{ManagerServer, ServedQueue};
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register("Queue", || Arc::new(ServedQueue::new(0)));
    /// ```
    pub fn register<R: Referent>(
        &mut self,
        typeid: &str,
        factory: impl Fn() -> Arc<R> + Send + Sync + 'static,
    ) -> &mut Self {
        let name = typeid.to_string();
        let factory: Factory = Arc::new(move |args, kwargs| {
            if args.is_empty() && kwargs.is_empty() {
                Ok(factory() as Arc<dyn Referent>)
            } else {
                Err(PyException::type_error(&format!(
                    "{name}() takes no arguments"
                )))
            }
        });
        self.config.registry.insert(typeid.to_string(), factory);
        self
    }

    /// As [`register`](Self::register), for a factory that takes the constructor arguments a
    /// client passes (CPython's `manager.Semaphore(2)` sends `create('Semaphore', 2)`), bound
    /// with [`bind`](super::bind) as Python would; its error reaches the client as a
    /// `RemoteError`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use multiproc::managers::{bind, Manager, ManagerServer, ServedQueue};
    /// use multiproc::pickle::Value;
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_with_args("Queue", |args, kwargs| {
    ///     match &bind("Queue", args, kwargs, &[("maxsize", Some(Value::Int(0)))])?[..] {
    ///         [Value::Int(n)] if *n >= 0 => Ok(Arc::new(ServedQueue::new(*n as usize))),
    ///         _ => Err(multiproc::managers::PyException::type_error("maxsize must be an int")),
    ///     }
    /// });
    /// let server = server.start_thread().unwrap();
    /// let manager = Manager::connect(server.address(), b"k").unwrap();
    /// let q = manager.create_with("Queue", vec![Value::Int(1)], vec![]).unwrap();
    /// q.call("put", vec![Value::Int(1)], vec![]).unwrap();
    /// assert_eq!(q.call("full", vec![], vec![]).unwrap(), Value::Bool(true));
    /// ```
    pub fn register_with_args(
        &mut self,
        typeid: &str,
        factory: impl Fn(Vec<Value>, Vec<(String, Value)>) -> Result<Arc<dyn Referent>, PyException>
            + Send
            + Sync
            + 'static,
    ) -> &mut Self {
        let factory: Factory = Arc::new(factory);
        self.config.registry.insert(typeid.to_string(), factory);
        self
    }

    /// Serves one shared [`ServedQueue`] under `typeid` (`maxsize` 0 = unbounded) and returns
    /// a handle for the server's own code: Python's
    /// `q = queue.Queue(); register(typeid, callable=lambda: q)`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let results = server.register_queue("get_result_queue", 0);
    /// assert!(results.is_empty());
    /// ```
    pub fn register_queue(&mut self, typeid: &str, maxsize: usize) -> ServedQueue {
        let queue = ServedQueue::new(maxsize);
        let shared = Arc::new(queue.clone());
        self.register(typeid, move || shared.clone());
        queue
    }

    /// Serves what CPython's `SyncManager` serves under the same typeids: `Event`
    /// ([`ServedEvent`](super::ServedEvent)), `Lock` and `RLock`
    /// ([`ServedLock`](super::ServedLock)), `Semaphore(value=1)` and
    /// `BoundedSemaphore(value=1)` ([`ServedSemaphore`](super::ServedSemaphore)),
    /// `Condition()` ([`ServedCondition`](super::ServedCondition)) and
    /// `Barrier(parties, timeout=None)` ([`ServedBarrier`](super::ServedBarrier)). A CPython
    /// client reaches them with `SyncManager`'s proxy types (`AcquirerProxy`, `EventProxy`,
    /// `ConditionProxy`, `BarrierProxy`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// use multiproc::pickle::Value;
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_sync_types();
    /// let server = server.start_thread().unwrap();
    /// let manager = Manager::connect(server.address(), b"k").unwrap();
    /// let sem = manager.create_with("BoundedSemaphore", vec![Value::Int(2)], vec![]).unwrap();
    /// assert_eq!(sem.call("acquire", vec![], vec![]).unwrap(), Value::Bool(true));
    /// sem.call("release", vec![], vec![]).unwrap();
    /// assert!(sem.call("release", vec![], vec![]).is_err()); // above its initial value
    /// ```
    pub fn register_sync_types(&mut self) -> &mut Self {
        super::primitives::register_sync_types(self);
        self
    }

    /// Serves the containers CPython's `SyncManager` serves under the same typeids:
    /// `list(sequence=())` ([`ServedList`](super::ServedList)), `dict(mapping=(), **kwargs)`
    /// ([`ServedDict`](super::ServedDict)), `Namespace()`
    /// ([`ServedNamespace`](super::ServedNamespace)), `Value(typecode, value)`
    /// ([`ServedValue`](super::ServedValue)) and `Array(typecode, sequence)`
    /// ([`ServedArray`](super::ServedArray)). A CPython client reaches them with
    /// `SyncManager`'s proxy types (`ListProxy`, `DictProxy`, `NamespaceProxy`, `ValueProxy`,
    /// `ArrayProxy`, and `IteratorProxy` registered as `Iterator` for iterating a dict).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// use multiproc::pickle::Value;
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_containers();
    /// let server = server.start_thread().unwrap();
    /// let manager = Manager::connect(server.address(), b"k").unwrap();
    /// let list = manager.create_with("list", vec![Value::List(vec![Value::Int(3), Value::Int(1)])], vec![]).unwrap();
    /// list.call("sort", vec![], vec![]).unwrap();
    /// assert_eq!(list.call("__getitem__", vec![Value::Int(0)], vec![]).unwrap(), Value::Int(1));
    /// ```
    pub fn register_containers(&mut self) -> &mut Self {
        super::containers::register_containers(self);
        self
    }

    /// Caps each frame after the handshake (default [`DEFAULT_MAX_FRAME`], 16 MiB), checked on
    /// the declared length before anything is allocated. A larger frame is read and dropped
    /// (up to 1 GiB), answered with `'#ERROR'` `ValueError` naming its size and the limit (its
    /// `size` and `limit` attributes set; a Rust client gets [`Error::MessageTooLarge`]), and
    /// that connection is closed. The server tells its proxies' clients the cap in its reply
    /// to `accept_connection` (which CPython's clients ignore), so a Rust proxy refuses an
    /// oversized request before sending it.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.max_frame(1 << 20);
    /// ```
    pub fn max_frame(&mut self, bytes: usize) -> &mut Self {
        self.config.max_frame = bytes;
        self
    }

    /// Caps simultaneous connections (default [`DEFAULT_MAX_CONNECTIONS`]); more are closed at
    /// once.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.max_connections(16);
    /// ```
    pub fn max_connections(&mut self, n: usize) -> &mut Self {
        self.config.max_connections = n;
        self
    }

    /// How long the six handshake frames may take in all (default 10 s); a peer that is
    /// slower is disconnected without a reply.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.handshake_timeout(Duration::from_secs(2));
    /// ```
    pub fn handshake_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Caps the nesting depth of request pickles (default 256). Decoding recurses once per
    /// level on a connection thread's stack: keep this in the thousands at most.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.max_depth(32);
    /// ```
    pub fn max_depth(&mut self, depth: usize) -> &mut Self {
        self.config.limits.max_depth = depth;
        self
    }

    /// What decoding a request may cost: depth, nodes and memory per byte of the frame
    /// (default [`Limits::default`]: memory bounded to a small multiple of the frame, so a
    /// hostile frame cannot make the server allocate far more than it sent). A request past
    /// them is answered with `'#ERROR'` naming the limit, and its connection closed. Raise
    /// them to accept very large plain data (a list of a million small ints needs more than
    /// the default memory per byte). Replaces what [`max_depth`](Self::max_depth) set.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::ManagerServer;
    /// use multiproc::pickle::Limits;
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.decode_limits(Limits { memory_per_byte: 8, ..Limits::default() });
    /// ```
    pub fn decode_limits(&mut self, limits: Limits) -> &mut Self {
        self.config.limits = limits;
        self
    }

    /// The challenge this server sends (default [`ChallengeForm::Sha256`], which every
    /// CPython client answers).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{ChallengeForm, ManagerServer};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.challenge_form(ChallengeForm::LegacyMd5);
    /// ```
    pub fn challenge_form(&mut self, form: ChallengeForm) -> &mut Self {
        self.config.auth.form = form;
        self
    }

    /// Refuses clients that answer with HMAC-MD5 (every CPython ≤ 3.11); off by default.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.strict(true);
    /// ```
    pub fn strict(&mut self, strict: bool) -> &mut Self {
        self.config.auth.strict = strict;
        self
    }

    /// Where the server reports connections it closed and why (default: a line on stderr).
    ///
    /// # Examples
    ///
    /// ```
    /// let mut server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.on_log(|_line| {}); // quiet
    /// ```
    pub fn on_log(&mut self, hook: impl Fn(&str) + Send + Sync + 'static) -> &mut Self {
        self.config.log = Arc::new(hook);
        self
    }

    fn into_inner(self) -> Arc<Inner> {
        Arc::new(Inner {
            address: self.address(),
            listener: Mutex::new(Some(Arc::new(self.listener))),
            config: self.config,
            objects: Mutex::new(Objects::default()),
            held: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
        })
    }

    /// Serves on this thread until a client sends `shutdown` (CPython's
    /// `get_server().serve_forever()`).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when accepting fails for a reason other than a peer's.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    ///
    /// let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let address = server.address();
    /// let t = std::thread::spawn(move || server.serve_forever());
    /// Manager::connect(address, b"k").unwrap().shutdown().unwrap();
    /// t.join().unwrap().unwrap();
    /// ```
    pub fn serve_forever(self) -> Result<(), Error> {
        let inner = self.into_inner();
        let result = inner.accept_loop();
        inner.stop();
        inner.drain();
        result
    }

    /// Serves from a background thread of this process.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the thread cannot be started.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let handle = server.start_thread().unwrap();
    /// handle.shutdown();
    /// ```
    pub fn start_thread(self) -> Result<ServerHandle, Error> {
        let inner = self.into_inner();
        let serving = inner.clone();
        let thread = std::thread::Builder::new()
            .name("multiproc-manager".into())
            .spawn(move || {
                let _ = serving.accept_loop();
            })
            .map_err(Error::os("spawn manager thread"))?;
        Ok(ServerHandle {
            inner,
            thread: Some(thread),
        })
    }

    /// Serves from a child process, as CPython's `BaseManager.start()` does.
    ///
    /// The child is **forked** whatever the default start method: the registered factories
    /// are Rust closures, which cannot be re-created in a re-executed binary. It is a daemon:
    /// it dies with this process, however this process ends, and it ignores SIGINT (Ctrl-C in
    /// a terminal reaches the whole process group; the server stays up for its clients). It inherits the
    /// listening socket (so [`ManagerProcess::address`] is known at once) and exits when a
    /// client sends `shutdown` or [`ManagerProcess::shutdown`] is called. [`ServedQueue`]
    /// handles kept by the parent refer to the parent's copies, not the child's.
    ///
    /// # Errors
    ///
    /// What starting a process can fail with.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let mut child = server.start().unwrap();
    /// let client = Manager::connect(child.address(), b"k").unwrap();
    /// client.get_queue::<u8>("q").unwrap().put(&1).unwrap();
    /// child.shutdown().unwrap();
    /// ```
    pub fn start(self) -> Result<ManagerProcess, Error> {
        self.start_child(None)
    }

    /// As [`start`](Self::start), running `initializer` in the child before it serves its
    /// first client (CPython's `manager.start(initializer)`): clients that connect meanwhile
    /// wait. If the initializer panics, the child exits and its clients are refused.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let q = server.register_queue("q", 0);
    /// // Runs in the server process, on its own copy of the queue.
    /// let mut child = server.start_with_initializer(move || q.put(&"ready").unwrap()).unwrap();
    /// let client = Manager::connect(child.address(), b"k").unwrap();
    /// assert_eq!(client.get_queue::<String>("q").unwrap().try_get().unwrap(), "ready");
    /// child.shutdown().unwrap();
    /// ```
    pub fn start_with_initializer(
        self,
        initializer: impl FnOnce() + Send + 'static,
    ) -> Result<ManagerProcess, Error> {
        self.start_child(Some(Box::new(initializer)))
    }

    fn start_child(self, initializer: Option<Initializer>) -> Result<ManagerProcess, Error> {
        let address = self.address();
        let auth = self.config.auth.clone();
        // One start at a time. The child never touches this lock; it must not inherit
        // HANDOFF locked, so that one is released before forking.
        let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        *HANDOFF.lock().unwrap_or_else(|e| e.into_inner()) = Some((self, initializer));
        let started = Process::builder()
            .start_method(StartMethod::Fork)
            .name("multiproc-manager")
            // No orphaned servers: the child is killed when this process ends, however it ends
            // (CPython leaves a manager process running when its parent is SIGKILLed).
            .daemon(true)
            .spawn(serve_handed_off, ());
        // The parent's copy of the listener closes here; the child keeps its own.
        HANDOFF.lock().unwrap_or_else(|e| e.into_inner()).take();
        Ok(ManagerProcess {
            process: started?,
            address,
            auth,
        })
    }
}

/// What a server child runs before serving.
type Initializer = Box<dyn FnOnce() + Send>;

/// The server a forked child is to run, and its initializer: the child's copy of memory
/// holds them.
static HANDOFF: Mutex<Option<(ManagerServer, Option<Initializer>)>> = Mutex::new(None);
/// Held by the parent while it forks a server child.
static STARTING: Mutex<()> = Mutex::new(());

fn serve_handed_off(_: ()) {
    crate::sys::net::ignore_sigint();
    let handed = HANDOFF.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((server, initializer)) = handed {
        if let Some(initializer) = initializer {
            initializer();
        }
        let _ = server.serve_forever();
    }
}

/// A manager server running in a child process ([`ManagerServer::start`]).
///
/// Dropping it shuts the server down (a `shutdown` request, then SIGTERM if it lingers).
#[derive(Debug)]
pub struct ManagerProcess {
    process: Process<()>,
    address: SocketAddr,
    auth: AuthConfig,
}

impl ManagerProcess {
    /// The address the server listens on.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let expected = server.address();
    /// let child = server.start().unwrap();
    /// assert_eq!(child.address(), expected);
    /// ```
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The child's pid.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let child = server.start().unwrap();
    /// assert_ne!(child.pid(), std::process::id());
    /// ```
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Asks the server to stop and waits for the child to exit (SIGTERM after 5 s), as
    /// CPython's `shutdown()` does.
    ///
    /// # Errors
    ///
    /// What joining the child reports (e.g. [`Error::Signaled`] if it had to be terminated).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.start().unwrap().shutdown().unwrap();
    /// ```
    pub fn shutdown(&mut self) -> Result<(), Error> {
        if self.process.exitcode().is_none() {
            let _ = super::client::control_request(
                self.address,
                &self.auth,
                "shutdown",
                Vec::new(),
                Some(Instant::now() + Duration::from_secs(5)),
            );
        }
        match self.process.join_timeout(Duration::from_secs(5)) {
            Err(Error::Timeout) => {
                self.process.terminate()?;
                self.process.join()
            }
            Err(Error::AlreadyJoined { .. }) => Ok(()),
            other => other,
        }
    }
}

impl Drop for ManagerProcess {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A manager server running on a background thread ([`ManagerServer::start_thread`]).
///
/// Dropping it shuts the server down.
pub struct ServerHandle {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("address", &self.inner.address)
            .finish()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// let expected = server.address();
    /// assert_eq!(server.start_thread().unwrap().address(), expected);
    /// ```
    pub fn address(&self) -> SocketAddr {
        self.inner.address
    }

    /// The number of objects with a non-zero reference count (`number_of_objects`).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// assert_eq!(server.start_thread().unwrap().number_of_objects(), 0);
    /// ```
    pub fn number_of_objects(&self) -> usize {
        self.inner.objects().len()
    }

    /// The number of connections being served right now.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// assert_eq!(server.start_thread().unwrap().connections(), 0);
    /// ```
    pub fn connections(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// Whether the server has stopped (a client sent `shutdown`, or [`shutdown`](Self::shutdown)).
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// assert!(!server.start_thread().unwrap().is_stopped());
    /// ```
    pub fn is_stopped(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Stops accepting, closes every connection, and waits for the accepting thread. The
    /// listening socket is closed when this returns, so the address can be bound again.
    /// A served method blocked at that moment (a `get` without timeout) sees its connection
    /// shut down and stops waiting within 100 ms, taking nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// let server = multiproc::managers::ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.start_thread().unwrap().shutdown();
    /// ```
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.inner.stop();
        self.inner.drain();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The served objects by ident. Looked up on every call, with FNV-1a rather than SipHash:
/// idents are made by this server (clients only look them up, they never choose a key that
/// is stored), so there is no flooding to resist, and the short keys hash several times
/// faster.
type Objects = HashMap<String, Entry, std::hash::BuildHasherDefault<Fnv>>;

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[derive(Clone)]
struct Entry {
    object: Arc<dyn Referent>,
    typeid: String,
    /// The object's exposed methods, those of its `method_to_typeid` included.
    exposed: Vec<String>,
    /// Methods returning a new shared object, and its typeid.
    method_to_typeid: Vec<(String, String)>,
    refcount: usize,
}

struct Inner {
    address: SocketAddr,
    /// Taken (and shut down) by `stop`; the accept loop holds its own reference until it ends.
    listener: Mutex<Option<Arc<TcpListener>>>,
    config: Config,
    objects: Mutex<Objects>,
    /// Objects whose proxies were sent to this server inside a request (e.g. a queue stored
    /// in a served list): kept for as long as the server runs, so that a proxy rebuilt from
    /// the stored data later finds its object, as CPython's `id_to_local_proxy_obj` does.
    held: Mutex<HashMap<String, Entry>>,
    active: AtomicUsize,
    /// Requests being answered right now: `stop` lets them write their replies.
    busy: AtomicUsize,
    stopping: AtomicBool,
    /// Open connections, to close them at shutdown.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

/// Counts a connection while it is served.
struct Active {
    inner: Arc<Inner>,
    id: u64,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request from its arrival until its reply is written.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(counter: &'a AtomicUsize) -> Busy<'a> {
        counter.fetch_add(1, Ordering::SeqCst);
        Busy(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How a request ended a connection.
enum Outcome {
    /// Keep serving (proxy connections).
    Continue,
    /// Close (control connections).
    Close,
    /// Close and stop the server (`shutdown`).
    Stop,
    /// Close, and log why the request was refused.
    Refused(String),
}

impl Inner {
    fn log(&self, line: &str) {
        (self.config.log)(line);
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn accept_loop(self: &Arc<Self>) -> Result<(), Error> {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(listener) = listener else {
            return Ok(());
        };
        loop {
            let accepted = listener.accept();
            if self.stopping.load(Ordering::Acquire) {
                return Ok(());
            }
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => match e.kind() {
                    std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionReset => continue,
                    _ if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                        self.log(&format!("accept: {e}; pausing"));
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    _ => {
                        return Err(Error::Os {
                            op: "accept",
                            source: e,
                        })
                    }
                },
            };
            if self.active.fetch_add(1, Ordering::AcqRel) >= self.config.max_connections {
                self.active.fetch_sub(1, Ordering::AcqRel);
                self.log(&format!(
                    "refused connection from {peer}: {} connections already open",
                    self.config.max_connections
                ));
                continue;
            }
            let id = self.next_connection.fetch_add(1, Ordering::Relaxed);
            if let Ok(copy) = stream.try_clone() {
                self.connections
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, copy);
            }
            let guard = Active {
                inner: self.clone(),
                id,
            };
            let spawned = std::thread::Builder::new()
                .name("multiproc-manager-conn".into())
                .spawn(move || {
                    let inner = guard.inner.clone();
                    if let Err(e) = inner.serve_connection(Arc::new(stream)) {
                        if !matches!(e, Error::Disconnected) {
                            inner.log(&format!("closed connection from {peer}: {e}"));
                        }
                    }
                    drop(guard);
                });
            if let Err(e) = spawned {
                self.log(&format!("cannot serve {peer}: {e}"));
            }
        }
    }

    /// Stops accepting (wakes the blocked `accept`) and closes every open connection.
    fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // shutdown(2) on a listening socket makes a blocked accept() return (Linux).
        if let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ =
                nix::sys::socket::shutdown(listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let open: Vec<TcpStream> = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        // Reading side only: a connection waiting for its next request ends at once, and one
        // whose request is being answered still sends the reply (a worker's last `put` would
        // otherwise fail when its master shuts the manager down the moment it has the result).
        for stream in open {
            let _ = stream.shutdown(std::net::Shutdown::Read);
        }
    }

    /// After `stop`: waits, a second at most, for the replies being written to go out.
    fn drain(&self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn serve_connection(&self, stream: Arc<TcpStream>) -> Result<(), Error> {
        let _watch = peer::watch(stream.clone());
        let stream = &*stream;
        wire::configure(stream)?;
        let mut reader = FrameReader::server();
        let deadline = Instant::now() + self.config.handshake_timeout;
        wire::until(stream, Some(deadline))?;
        let handshake =
            auth::deliver_challenge(stream, &mut reader, &self.config.auth).and_then(|()| {
                wire::until(stream, Some(deadline))?;
                auth::answer_challenge(stream, &mut reader, &self.config.auth)
            });
        match handshake {
            Err(Error::Timeout) => {
                return Err(Error::Protocol {
                    reason: "handshake deadline passed".into(),
                })
            }
            other => other?,
        }
        wire::until(stream, None)?;
        let mut proxy = false;
        loop {
            let request =
                match reader.recv_request(stream, self.config.max_frame, &self.config.limits) {
                    Ok(r) => r,
                    Err(Error::Disconnected) if proxy => return Ok(()),
                    Err(e) => return Err(refuse(stream, &mut reader, e)),
                };
            reader.quickack_inside_frames_only();
            let busy = Busy::new(&self.busy);
            // A request read after a shutdown began is not served: `shutdown` returns once the
            // requests it let through are answered (it waits for `busy`), and none after. On
            // Linux a reader shut down with SHUT_RD still reads data that arrives later.
            if self.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            let request = match request {
                Incoming::Request(request) => Ok(request),
                Incoming::Full(value) | Incoming::Return(value) => parse_request(value),
            };
            let (request, ((kind, payload), outcome)) = match request {
                Ok((ident, method, args, kwargs)) => {
                    let answer = if proxy {
                        peer::begin_call();
                        (self.call(&ident, &method, args, kwargs), Outcome::Continue)
                    } else if let Some(reason) = not_plain(&method, &args, &kwargs) {
                        refused(reason)
                    } else if method == "accept_connection" {
                        proxy = true;
                        // CPython's clients ignore the value; ours learn the frame cap from it
                        // and refuse an oversized request before sending it (issue 12.3).
                        let cap = i64::try_from(self.config.max_frame).unwrap_or(i64::MAX);
                        (("#RETURN", Value::Int(cap)), Outcome::Continue)
                    } else {
                        self.control(&method, args, kwargs)
                    };
                    (Some((ident, method)), answer)
                }
                Err(reason) => (None, refused(reason)),
            };
            // A call that waited may have outlived its client: its reply then goes back to
            // the object instead of into a dead socket (issue 12.1).
            let sent = if proxy && peer::waited() && peer::gone() {
                Err(Error::Disconnected)
            } else {
                reader.send_reply(stream, kind, &payload)
            };
            if let Err(e) = sent {
                if let (Some((Some(ident), method)), "#RETURN") = (&request, kind) {
                    self.undeliverable(ident, method, payload);
                }
                return Err(e);
            }
            if let Some((ident, method)) = request {
                reader.recycle(method);
                if let Some(ident) = ident {
                    reader.recycle(ident);
                }
            }
            drop(busy);
            match outcome {
                Outcome::Continue => {}
                Outcome::Close => return Ok(()),
                Outcome::Refused(reason) => return Err(Error::Protocol { reason }),
                Outcome::Stop => {
                    self.stop();
                    return Ok(());
                }
            }
        }
    }

    /// Hands a reply that could not be delivered back to its object
    /// ([`Referent::reply_undelivered`]).
    fn undeliverable(&self, ident: &str, method: &str, result: Value) {
        let object = self.objects().get(ident).map(|e| e.object.clone());
        if let Some(object) = object {
            let undo = std::panic::AssertUnwindSafe(|| object.reply_undelivered(method, result));
            if std::panic::catch_unwind(undo).is_err() {
                self.log(&format!("reply_undelivered({method}) of {ident} panicked"));
            }
        }
    }

    fn control(
        &self,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> (Reply, Outcome) {
        let ok = |v| (("#RETURN", v), Outcome::Close);
        let ident_arg = |args: &[Value]| match args {
            [Value::Str(ident)] => Ok(ident.clone()),
            _ => Err(format!("TypeError: {method}() takes one str argument\n")),
        };
        let result: Result<Value, String> = match method {
            "dummy" => Ok(Value::None),
            "create" => self.create(args, kwargs),
            "incref" => ident_arg(&args).and_then(|ident| {
                let mut objects = self.objects();
                if !objects.contains_key(&ident) {
                    // A proxy rebuilt from data stored in a served object: its object comes
                    // back from the held ones, with this first reference.
                    let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
                    let entry = held.get(&ident).ok_or_else(|| key_error(&ident))?;
                    objects.insert(
                        ident.clone(),
                        Entry {
                            refcount: 0,
                            ..entry.clone()
                        },
                    );
                }
                if let Some(entry) = objects.get_mut(&ident) {
                    entry.refcount += 1;
                }
                Ok(Value::None)
            }),
            "decref" => ident_arg(&args).and_then(|ident| {
                let mut objects = self.objects();
                if !objects.contains_key(&ident)
                    && self
                        .held
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .contains_key(&ident)
                {
                    return Ok(Value::None);
                }
                let entry = objects.get_mut(&ident).ok_or_else(|| key_error(&ident))?;
                entry.refcount -= 1;
                if entry.refcount == 0 {
                    objects.remove(&ident);
                }
                Ok(Value::None)
            }),
            "number_of_objects" => Ok(Value::Int(self.objects().len() as i64)),
            "debug_info" => {
                let objects = self.objects();
                let mut lines: Vec<String> = objects
                    .iter()
                    .map(|(ident, e)| {
                        format!("  {ident}:       refcount={}\n    {}", e.refcount, e.typeid)
                    })
                    .collect();
                lines.sort();
                Ok(Value::Str(lines.join("\n")))
            }
            "get_methods" => match args.first().and_then(token_ident) {
                Some(ident) => self
                    .objects()
                    .get(&ident)
                    .map(|e| exposed_tuple(&e.exposed))
                    .ok_or_else(|| key_error(&ident)),
                None => Err("TypeError: get_methods() takes a Token\n".into()),
            },
            "shutdown" => {
                return (("#RETURN", Value::None), Outcome::Stop);
            }
            other => Err(format!("AssertionError: {other:?} unrecognized\n")),
        };
        match result {
            Ok(v) => ok(v),
            Err(text) => (traceback(&text), Outcome::Close),
        }
    }

    fn create(&self, mut args: Vec<Value>, kwargs: Vec<(String, Value)>) -> Result<Value, String> {
        let typeid = match args.first() {
            Some(Value::Str(typeid)) => typeid.clone(),
            _ => return Err("TypeError: create() needs a typeid\n".into()),
        };
        args.remove(0);
        self.hold_stored_proxies(&args, &kwargs);
        let factory = self
            .config
            .registry
            .get(&typeid)
            .ok_or_else(|| key_error(&typeid))?;
        let object =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| factory(args, kwargs)))
                .map_err(|_| format!("RuntimeError: the factory of {typeid} panicked\n"))?
                .map_err(|e| format!("{}.{}: {}\n", e.module, e.name, e.message()))?;
        let (ident, exposed) = self.adopt(object, typeid);
        Ok(Value::Tuple(vec![Value::Str(ident), exposed]))
    }

    /// Keeps alive the objects of this server whose proxies travel inside `args`/`kwargs`
    /// (pickled as `RebuildProxy(func, Token, serializer, kwds)`).
    fn hold_stored_proxies(&self, args: &[Value], kwargs: &[(String, Value)]) {
        let mut idents = Vec::new();
        for value in args.iter().chain(kwargs.iter().map(|(_, v)| v)) {
            proxy_idents(value, &mut idents);
        }
        if idents.is_empty() {
            return;
        }
        let objects = self.objects();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for ident in idents {
            if let Some(entry) = objects.get(&ident) {
                held.entry(ident).or_insert_with(|| entry.clone());
            }
        }
    }

    /// Holds `object` under `typeid` with one more reference (for the caller's proxy), as
    /// CPython's `Server.create` does; gives its ident and exposed methods.
    fn adopt(&self, object: Arc<dyn Referent>, typeid: String) -> (String, Value) {
        let ident = format!("{:x}", Arc::as_ptr(&object) as *const () as usize);
        let mut objects = self.objects();
        let entry = objects.entry(ident.clone()).or_insert_with(|| {
            let method_to_typeid = object.method_to_typeid();
            let mut exposed = object.exposed();
            for (method, _) in &method_to_typeid {
                if !exposed.contains(method) {
                    exposed.push(method.clone());
                }
            }
            Entry {
                exposed,
                method_to_typeid,
                object,
                typeid,
                refcount: 0,
            }
        });
        entry.refcount += 1;
        let exposed = exposed_tuple(&entry.exposed);
        (ident, exposed)
    }

    /// Runs a `method_to_typeid` method and serves its result: `'#PROXY'` with the new
    /// object's exposed methods and `Token` (PROTOCOL.md §6.4).
    fn call_for_proxy(
        &self,
        object: &Arc<dyn Referent>,
        method: &str,
        typeid: String,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Reply {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            object.call_for_object(method, args, kwargs)
        }));
        match result {
            Ok(Ok(child)) => {
                let (ident, exposed) = self.adopt(child, typeid.clone());
                let token = token_value(&typeid, self.address, &ident);
                ("#PROXY", Value::Tuple(vec![exposed, token]))
            }
            Ok(Err(exception)) => ("#ERROR", exception.to_value()),
            Err(_) => (
                "#ERROR",
                PyException::new("builtins", "RuntimeError", &format!("{method}() panicked"))
                    .to_value(),
            ),
        }
    }

    fn call(
        &self,
        ident: &Option<String>,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Reply {
        let Some(ident) = ident else {
            return traceback("TypeError: a proxy call needs an object id\n");
        };
        let found = self.objects().get(ident).map(|e| {
            let to_typeid = e
                .method_to_typeid
                .iter()
                .find(|(m, _)| m == method)
                .map(|(_, typeid)| typeid.clone());
            (
                e.object.clone(),
                e.exposed.iter().any(|m| m == method),
                to_typeid,
            )
        });
        let Some((object, exposed, to_typeid)) = found else {
            return traceback(&key_error(ident));
        };
        self.hold_stored_proxies(&args, &kwargs);
        if let Some(typeid) = to_typeid {
            return self.call_for_proxy(&object, method, typeid, args, kwargs);
        }
        if exposed {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                object.call(method, args, kwargs)
            }));
            return match result {
                Ok(Ok(v)) => ("#RETURN", v),
                Ok(Err(exception)) => ("#ERROR", exception.to_value()),
                Err(_) => (
                    "#ERROR",
                    PyException::new("builtins", "RuntimeError", &format!("{method}() panicked"))
                        .to_value(),
                ),
            };
        }
        let typeid = self
            .objects()
            .get(ident)
            .map(|e| e.typeid.clone())
            .unwrap_or_default();
        match method {
            "#GETVALUE" => (
                "#UNSERIALIZABLE",
                Value::Str(format!("TypeError: cannot pickle a served {typeid} object")),
            ),
            "__str__" | "__repr__" => ("#RETURN", Value::Str(format!("<{typeid} object {ident}>"))),
            _ => traceback(&format!(
                "AttributeError: method {method:?} of {typeid:?} object is not exposed\n"
            )),
        }
    }
}

fn key_error(key: &str) -> String {
    format!("KeyError: {key:?}\n")
}

/// A reply: its kind (`'#RETURN'`, `'#ERROR'`, …) and payload (PROTOCOL.md §5.2).
type Reply = (&'static str, Value);

fn traceback(text: &str) -> Reply {
    ("#TRACEBACK", Value::Str(text.to_string()))
}

fn exposed_tuple(exposed: &[String]) -> Value {
    Value::Tuple(exposed.iter().map(|s| Value::Str(s.clone())).collect())
}

/// A pickled `multiprocessing.managers.Token(typeid, address, ident)` (PROTOCOL.md §6.4): a
/// `NEWOBJ` of the class with no arguments and the state tuple `(typeid, (host, port), ident)`.
fn token_value(typeid: &str, address: SocketAddr, ident: &str) -> Value {
    Value::Object {
        class: Box::new(Value::global("multiprocessing.managers", "Token")),
        args: Box::new(Value::Tuple(Vec::new())),
        kwargs: None,
        state: Some(Box::new(Value::Tuple(vec![
            Value::Str(typeid.to_string()),
            Value::Tuple(vec![
                Value::Str(address.ip().to_string()),
                Value::Int(address.port().into()),
            ]),
            Value::Str(ident.to_string()),
        ]))),
    }
}

/// Collects the idents of the proxies pickled inside `value`: CPython pickles a proxy as
/// `RebuildProxy(func, Token, serializer, kwds)`.
fn proxy_idents(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Reduce { callable, args, .. } => {
            if callable.as_ref() == &Value::global("multiprocessing.managers", "RebuildProxy") {
                if let Value::Tuple(items) = args.as_ref() {
                    if let Some(ident) = items.get(1).and_then(token_ident) {
                        out.push(ident);
                        return;
                    }
                }
            }
            proxy_idents(args, out);
        }
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items.iter().for_each(|v| proxy_idents(v, out))
        }
        Value::Dict(pairs) => pairs.iter().for_each(|(k, v)| {
            proxy_idents(k, out);
            proxy_idents(v, out);
        }),
        Value::Object { args, state, .. } => {
            proxy_idents(args, out);
            if let Some(state) = state {
                proxy_idents(state, out);
            }
        }
        _ => {}
    }
}

/// The ident inside a pickled `Token` (PROTOCOL.md §6.4): its state is
/// `(typeid, address, ident)`.
fn token_ident(token: &Value) -> Option<String> {
    match token {
        Value::Object {
            state: Some(state), ..
        }
        | Value::Reduce {
            state: Some(state), ..
        } => match &**state {
            Value::Tuple(items) => items.get(2).and_then(Value::as_str).map(str::to_string),
            _ => None,
        },
        _ => None,
    }
}

/// How much of a refused frame's payload the server reads (and drops) so that its sender,
/// still writing it, gets to read the reply; beyond that the connection is closed at once.
const DISCARD_MAX: u64 = 1 << 30;

/// Answers a frame that cannot be served — over the frame cap, or a pickle the decoder
/// refuses (a limit, a malformed one) — with `'#ERROR'` naming the reason, when the stream is
/// still in step, and gives back the error: the connection is then closed and the reason
/// logged. Framing errors (a negative length, a truncated frame) get no answer.
fn refuse(stream: &TcpStream, reader: &mut FrameReader, e: Error) -> Error {
    let exception = match &e {
        Error::MessageTooLarge { size, limit } => {
            if *size > DISCARD_MAX || reader.discard(stream, *size).is_err() {
                return e;
            }
            too_large_error(*size, *limit)
        }
        Error::Pickle(reason) => value_error(&format!("{}{reason}", wire::REFUSAL_PREFIX)),
        _ => return e,
    };
    let _ = reader.send_reply(stream, "#ERROR", &exception);
    e
}

/// A refused request: `'#ERROR'` with a `ValueError` naming the reason, then close and log.
fn refused(reason: String) -> (Reply, Outcome) {
    let reason = format!("{}{reason}", wire::REFUSAL_PREFIX);
    (("#ERROR", value_error(&reason)), Outcome::Refused(reason))
}

/// `builtins.ValueError(message)`: every CPython client can unpickle it (PROTOCOL.md §5.3).
fn value_error(message: &str) -> Value {
    PyException::value_error(message).to_value()
}

/// `ValueError(message)` with the attributes `size` and `limit`, as CPython pickles an
/// exception carrying attributes (a BUILD with its `__dict__`, PROTOCOL.md §5.3): a CPython
/// client reads `e.size` and `e.limit`, ours makes it [`Error::MessageTooLarge`].
fn too_large_error(size: u64, limit: u64) -> Value {
    let message = Error::MessageTooLarge { size, limit }.to_string();
    let int = |n: u64| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    match value_error(&message) {
        Value::Reduce { callable, args, .. } => Value::Reduce {
            callable,
            args,
            state: Some(Box::new(Value::Dict(vec![
                (Value::Str("size".into()), int(size)),
                (Value::Str("limit".into()), int(limit)),
            ]))),
        },
        other => other,
    }
}

/// The first Python object (a global, or one built from a global) inside `value`, named.
fn first_object(value: &Value) -> Option<String> {
    match value {
        Value::Global { module, name } => Some(format!("{module}.{name}")),
        Value::Reduce { callable: of, .. } | Value::Object { class: of, .. } => {
            Some(first_object(of).unwrap_or_else(|| "(unnamed)".into()))
        }
        Value::Tuple(items) | Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items.iter().find_map(first_object)
        }
        Value::Dict(pairs) => pairs
            .iter()
            .find_map(|(k, v)| first_object(k).or_else(|| first_object(v))),
        _ => None,
    }
}

/// Why a control request whose arguments must be plain data carries a Python object
/// (`create` and `get_methods` may carry objects: constructor arguments, a `Token`).
fn not_plain(method: &str, args: &[Value], kwargs: &[(String, Value)]) -> Option<String> {
    if matches!(method, "create" | "get_methods") {
        return None;
    }
    let found = args
        .iter()
        .chain(kwargs.iter().map(|(_, v)| v))
        .find_map(first_object)?;
    Some(format!(
        "pickle global {found} in the arguments of {method:?}, where plain data is expected"
    ))
}

/// Splits `(ident, methodname, args, kwds)`; the error is the reason to refuse it.
fn parse_request(request: Value) -> Result<Request, String> {
    let bad = |part: &Value| match first_object(part) {
        Some(found) => {
            format!("pickle global {found} in the request envelope, where plain data is expected")
        }
        None => "a request must be (ident, methodname, args, kwds)".to_string(),
    };
    let Value::Tuple(items) = request else {
        return Err(bad(&request));
    };
    let [ident, method, args, kwds]: [Value; 4] = match items.try_into() {
        Ok(parts) => parts,
        Err(items) => return Err(bad(&Value::Tuple(items))),
    };
    let ident = match ident {
        Value::None => None,
        Value::Str(s) => Some(s),
        other => return Err(bad(&other)),
    };
    let Value::Str(method) = method else {
        return Err(bad(&method));
    };
    let Value::Tuple(args) = args else {
        return Err(bad(&args));
    };
    let Value::Dict(kwds) = kwds else {
        return Err(bad(&kwds));
    };
    let kwargs = kwds
        .into_iter()
        .map(|(k, v)| match k {
            Value::Str(k) => Ok((k, v)),
            other => Err(bad(&other)),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ident, method, args, kwargs))
}
