//! [`ManagerServer`] before it runs: binding its address, registering what it serves
//! (factories by typeid), and its limits (frame cap, connections, handshake deadline,
//! decoding limits, challenge form). Running it is in [`super::handle`].

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Config, Factory, Inner, Objects};
use crate::connection::auth::{AuthConfig, ChallengeForm};
use crate::managers::served::{PyException, Referent, ServedQueue};
use crate::managers::wire;
use crate::pickle::{Limits, PyValue};
use crate::Error;

/// Default cap on a frame after the handshake.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;
/// Default cap on simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

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
    pub(super) listener: TcpListener,
    pub(super) config: Config,
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
    /// [`Error::Address`] when it is not a TCP `host:port` address.
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
    /// with [`bind_arguments`](crate::managers::bind_arguments) as Python would; its error reaches the client as a
    /// `RemoteError`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use multiproc::managers::{bind_arguments, Manager, ManagerServer, ServedQueue};
    /// use multiproc::pickle::PyValue;
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_with_args("Queue", |args, kwargs| {
    ///     match &bind_arguments("Queue", args, kwargs, &[("maxsize", Some(PyValue::Int(0)))])?[..] {
    ///         [PyValue::Int(n)] if *n >= 0 => Ok(Arc::new(ServedQueue::new(*n as usize))),
    ///         _ => Err(multiproc::managers::PyException::type_error("maxsize must be an int")),
    ///     }
    /// });
    /// let server = server.start_thread().unwrap();
    /// let manager = Manager::connect(server.address(), b"k").unwrap();
    /// let q = manager.create_with("Queue", vec![PyValue::Int(1)], vec![]).unwrap();
    /// q.call("put", vec![PyValue::Int(1)], vec![]).unwrap();
    /// assert_eq!(q.call("full", vec![], vec![]).unwrap(), PyValue::Bool(true));
    /// ```
    pub fn register_with_args(
        &mut self,
        typeid: &str,
        factory: impl Fn(Vec<PyValue>, Vec<(String, PyValue)>) -> Result<Arc<dyn Referent>, PyException>
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
    /// ([`ServedEvent`](crate::managers::ServedEvent)), `Lock` and `RLock`
    /// ([`ServedLock`](crate::managers::ServedLock)), `Semaphore(value=1)` and
    /// `BoundedSemaphore(value=1)` ([`ServedSemaphore`](crate::managers::ServedSemaphore)),
    /// `Condition()` ([`ServedCondition`](crate::managers::ServedCondition)) and
    /// `Barrier(parties, timeout=None)` ([`ServedBarrier`](crate::managers::ServedBarrier)). A CPython
    /// client reaches them with `SyncManager`'s proxy types (`AcquirerProxy`, `EventProxy`,
    /// `ConditionProxy`, `BarrierProxy`).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// use multiproc::pickle::PyValue;
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_sync_types();
    /// let server = server.start_thread().unwrap();
    /// let manager = Manager::connect(server.address(), b"k").unwrap();
    /// let sem = manager.create_with("BoundedSemaphore", vec![PyValue::Int(2)], vec![]).unwrap();
    /// assert_eq!(sem.call("acquire", vec![], vec![]).unwrap(), PyValue::Bool(true));
    /// sem.call("release", vec![], vec![]).unwrap();
    /// assert!(sem.call("release", vec![], vec![]).is_err()); // above its initial value
    /// ```
    pub fn register_sync_types(&mut self) -> &mut Self {
        crate::managers::served::sync_manager::register_sync_types(self);
        self
    }

    /// Serves the containers CPython's `SyncManager` serves under the same typeids:
    /// `list(sequence=())` ([`ServedList`](crate::managers::ServedList)), `dict(mapping=(), **kwargs)`
    /// ([`ServedDict`](crate::managers::ServedDict)), `Namespace()`
    /// ([`ServedNamespace`](crate::managers::ServedNamespace)), `Value(typecode, value)`
    /// ([`ServedValue`](crate::managers::ServedValue)) and `Array(typecode, sequence)`
    /// ([`ServedArray`](crate::managers::ServedArray)). A CPython client reaches them with
    /// `SyncManager`'s proxy types (`ListProxy`, `DictProxy`, `NamespaceProxy`, `ValueProxy`,
    /// `ArrayProxy`, and `IteratorProxy` registered as `Iterator` for iterating a dict).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// use multiproc::pickle::PyValue;
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_containers();
    /// let server = server.start_thread().unwrap();
    /// let manager = Manager::connect(server.address(), b"k").unwrap();
    /// let list = manager.create_with("list", vec![PyValue::List(vec![PyValue::Int(3), PyValue::Int(1)])], vec![]).unwrap();
    /// list.call("sort", vec![], vec![]).unwrap();
    /// assert_eq!(list.call("__getitem__", vec![PyValue::Int(0)], vec![]).unwrap(), PyValue::Int(1));
    /// ```
    pub fn register_containers(&mut self) -> &mut Self {
        crate::managers::served::sync_manager::register_containers(self);
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

    pub(super) fn into_inner(self) -> Arc<Inner> {
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
}
