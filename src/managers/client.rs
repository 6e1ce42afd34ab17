//! The client: connects to a manager server (Rust or CPython), runs control requests, and
//! makes proxies.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::proxy::{Proxy, QueueProxy};
use super::wire::{self, FrameReader};
use crate::connection;
use crate::connection::auth::{AuthConfig, ChallengeForm};
use crate::pickle::{Limits, PyValue};
use crate::{Error, WireError};

/// Client settings for [`Manager::connect_with`].
///
/// # Examples
///
/// ```
/// use multiproc::managers::ConnectOptions;
/// let options = ConnectOptions { strict: true, ..ConnectOptions::default() };
/// assert!(options.max_frame > 0);
/// ```
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Refuse a server that answers our challenge with HMAC-MD5 (every CPython ≤ 3.11).
    pub strict: bool,
    /// The challenge we send the server.
    pub challenge_form: ChallengeForm,
    /// The largest reply frame accepted (default 64 MiB).
    pub max_frame: usize,
    /// How long connecting plus the handshake may take (default 10 s).
    pub connect_timeout: Duration,
    /// What decoding a reply may cost: depth, nodes and memory per byte of the frame
    /// (default [`Limits::default`]). A reply past them is [`WireError::Protocol`] and its
    /// connection is dropped; raise them to receive very large plain data (a list of a
    /// million small ints needs more than the default memory per byte).
    pub limits: Limits,
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            strict: false,
            challenge_form: ChallengeForm::Sha256,
            max_frame: 64 << 20,
            connect_timeout: wire::HANDSHAKE_TIMEOUT,
            limits: Limits::default(),
        }
    }
}

/// A client of a manager server: CPython's `BaseManager(address, authkey).connect()`.
///
/// Cheap to clone; every request opens its own authenticated connection, as CPython's
/// control requests do, and each proxy keeps its own connections for method calls.
///
/// # Examples
///
/// ```
/// use multiproc::managers::{Manager, ManagerServer};
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register_queue("get_task_queue", 0);
/// let server = server.start_thread().unwrap();
///
/// let manager = Manager::connect(server.address(), b"k").unwrap();
/// let q = manager.get_queue::<String>("get_task_queue").unwrap();
/// q.put(&"hello".to_string()).unwrap();
/// assert_eq!(q.get().unwrap(), "hello");
/// ```
#[derive(Clone)]
pub struct Manager {
    pub(crate) address: SocketAddr,
    pub(crate) auth: AuthConfig,
    pub(crate) options: ConnectOptions,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.address)
            .field("auth", &self.auth)
            .finish()
    }
}

impl Manager {
    /// Connects to the server at `address` with `authkey` and checks both (CPython's
    /// `connect()`, which sends `dummy`).
    ///
    /// # Errors
    ///
    /// [`WireError::Auth`] for a wrong key on either side; [`Error::Os`] when the server cannot
    /// be reached; [`WireError::Protocol`] when the peer does not speak the protocol;
    /// [`Error::Address`] when the address is not a TCP `host:port` address.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// use multiproc::{Error, WireError};
    /// let server = ManagerServer::bind("127.0.0.1:0", b"right").unwrap().start_thread().unwrap();
    /// assert!(matches!(
    ///     Manager::connect(server.address(), b"wrong"),
    ///     Err(Error::Wire(WireError::Auth { .. }))
    /// ));
    /// ```
    pub fn connect(address: impl ToSocketAddrs, authkey: &[u8]) -> Result<Manager, Error> {
        Manager::connect_with(address, authkey, ConnectOptions::default())
    }

    /// As [`connect`](Self::connect), with settings.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{ConnectOptions, Manager, ManagerServer};
    /// let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap().start_thread().unwrap();
    /// let options = ConnectOptions { strict: true, ..ConnectOptions::default() };
    /// Manager::connect_with(server.address(), b"k", options).unwrap();
    /// ```
    pub fn connect_with(
        address: impl ToSocketAddrs,
        authkey: &[u8],
        options: ConnectOptions,
    ) -> Result<Manager, Error> {
        let address = wire::resolve(address)?[0];
        let manager = Manager {
            address,
            auth: AuthConfig {
                key: authkey.to_vec(),
                form: options.challenge_form,
                strict: options.strict,
            },
            options,
        };
        manager.control("dummy", Vec::new())?;
        Ok(manager)
    }

    /// The server's address.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap().start_thread().unwrap();
    /// assert_eq!(Manager::connect(server.address(), b"k").unwrap().address(), server.address());
    /// ```
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn control(&self, method: &str, args: Vec<PyValue>) -> Result<PyValue, Error> {
        self.control_with(method, args, Vec::new())
    }

    fn control_with(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, Error> {
        let deadline = Instant::now() + self.options.connect_timeout;
        let (stream, mut reader) = self.open(deadline)?;
        reader.send_request(&stream, None, method, &args, &kwargs)?;
        // A control request is answered at once: a server that does not is not waited for.
        wire::until(&stream, Some(Instant::now() + self.options.connect_timeout))?;
        let reply = reader.recv_value(&stream, self.options.max_frame, &self.options.limits)?;
        unpack(reply)
    }

    /// Opens an authenticated connection (the handshake bounded by `deadline`).
    pub(crate) fn open(&self, deadline: Instant) -> Result<(TcpStream, FrameReader), Error> {
        open(self.address, &self.auth, deadline)
    }

    /// Creates an object of `typeid` on the server and returns a proxy to it (CPython's
    /// `manager.<typeid>()`). The proxy owns the reference `create` took; dropping it sends
    /// `decref`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] for an unknown typeid; connection errors as for
    /// [`connect`](Self::connect).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let server = server.start_thread().unwrap();
    /// let proxy = Manager::connect(server.address(), b"k").unwrap().create("q").unwrap();
    /// assert!(proxy.exposed().iter().any(|m| m == "get"));
    /// ```
    pub fn create(&self, typeid: &str) -> Result<Proxy, Error> {
        self.create_with(typeid, Vec::new(), Vec::new())
    }

    /// As [`create`](Self::create), passing constructor arguments (CPython's
    /// `manager.Semaphore(2)` or `manager.Queue(maxsize=5)`).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); [`Error::Remote`] when the server's factory refuses the
    /// arguments.
    ///
    /// # Examples
    ///
    /// See [`ManagerServer::register_with_args`](super::ManagerServer::register_with_args).
    pub fn create_with(
        &self,
        typeid: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Proxy, Error> {
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(PyValue::Str(typeid.to_string()));
        all.extend(args);
        let reply = self.control_with("create", all, kwargs)?;
        let bad = || {
            Error::Wire(WireError::Protocol {
                reason: "create() replied with something other than (ident, exposed)".into(),
            })
        };
        let PyValue::Tuple(items) = reply else {
            return Err(bad());
        };
        let [ident, exposed]: [PyValue; 2] = items.try_into().map_err(|_| bad())?;
        let PyValue::Str(ident) = ident else {
            return Err(bad());
        };
        let exposed = exposed_names(exposed).ok_or_else(bad)?;
        Ok(Proxy::new(self.clone(), ident, exposed))
    }

    /// A typed proxy to the queue the server serves under `typeid` (e.g. `"get_task_queue"`).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let server = server.start_thread().unwrap();
    /// let q = Manager::connect(server.address(), b"k").unwrap().get_queue::<u32>("q").unwrap();
    /// q.put(&3).unwrap();
    /// assert_eq!(q.qsize().unwrap(), 1);
    /// ```
    pub fn get_queue<T>(&self, typeid: &str) -> Result<QueueProxy<T>, Error> {
        self.create(typeid).map(QueueProxy::new)
    }

    /// The number of objects the server holds references to (`number_of_objects`).
    ///
    /// # Errors
    ///
    /// Connection errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap().start_thread().unwrap();
    /// assert_eq!(Manager::connect(server.address(), b"k").unwrap().number_of_objects().unwrap(), 0);
    /// ```
    pub fn number_of_objects(&self) -> Result<usize, Error> {
        match self.control("number_of_objects", Vec::new())? {
            PyValue::Int(n) if n >= 0 => Ok(n as usize),
            _ => Err(Error::Wire(WireError::Protocol {
                reason: "number_of_objects() did not return an int".into(),
            })),
        }
    }

    /// The server's description of its objects and reference counts (`debug_info`).
    ///
    /// # Errors
    ///
    /// Connection errors.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap().start_thread().unwrap();
    /// assert_eq!(Manager::connect(server.address(), b"k").unwrap().debug_info().unwrap(), "");
    /// ```
    pub fn debug_info(&self) -> Result<String, Error> {
        match self.control("debug_info", Vec::new())? {
            PyValue::Str(s) => Ok(s),
            _ => Err(Error::Wire(WireError::Protocol {
                reason: "debug_info() did not return a str".into(),
            })),
        }
    }

    /// Asks the server to stop (`shutdown`); a CPython server process then exits.
    ///
    /// # Errors
    ///
    /// Connection errors before the request was sent.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap().start_thread().unwrap();
    /// Manager::connect(server.address(), b"k").unwrap().shutdown().unwrap();
    /// ```
    pub fn shutdown(&self) -> Result<(), Error> {
        let deadline = Instant::now() + self.options.connect_timeout;
        control_request(
            self.address,
            &self.auth,
            "shutdown",
            Vec::new(),
            Some(deadline),
        )
        .map(|_| ())
    }
}

/// Connects and authenticates ([`connection::connect_authenticated`]).
pub(crate) fn open(
    address: SocketAddr,
    auth: &AuthConfig,
    deadline: Instant,
) -> Result<(TcpStream, FrameReader), Error> {
    let (stream, frames) = connection::connect_authenticated(address, auth, deadline)?;
    Ok((stream, frames.into()))
}

/// One control request on a fresh connection. For `shutdown`, end of stream instead of a
/// reply counts as done.
pub(crate) fn control_request(
    address: SocketAddr,
    auth: &AuthConfig,
    method: &str,
    args: Vec<PyValue>,
    deadline: Option<Instant>,
) -> Result<PyValue, Error> {
    let deadline = deadline.unwrap_or_else(|| Instant::now() + wire::HANDSHAKE_TIMEOUT);
    let (stream, mut reader) = open(address, auth, deadline)?;
    reader.send_request(&stream, None, method, &args, &[])?;
    wire::until(&stream, Some(deadline))?;
    match reader.recv_value(&stream, 64 << 20, &Limits::default()) {
        Ok(reply) => unpack(reply),
        Err(Error::Disconnected) if method == "shutdown" => Ok(PyValue::None),
        Err(e) => Err(e),
    }
}

/// The class name CPython's `RemoteError` has.
const REMOTE_ERROR: &str = "multiprocessing.managers.RemoteError";

/// What a successful reply carried.
pub(crate) enum Reply {
    /// `'#RETURN'`: a value.
    Value(PyValue),
    /// `'#PROXY'`: a new shared object the server holds one reference to for us.
    Proxy {
        /// Its exposed methods.
        exposed: Vec<String>,
        /// Its id on the server.
        ident: String,
    },
}

/// Turns a reply `(kind, payload)` into the value or the typed error (PROTOCOL.md §5.2).
/// Control requests never get `'#PROXY'`.
pub(crate) fn unpack(reply: PyValue) -> Result<PyValue, Error> {
    match unpack_reply(reply)? {
        Reply::Value(value) => Ok(value),
        Reply::Proxy { .. } => Err(Error::Wire(WireError::Protocol {
            reason: "a '#PROXY' reply to a control request".into(),
        })),
    }
}

/// Turns a reply into a value, a new proxy's token, or the typed error.
pub(crate) fn unpack_reply(reply: PyValue) -> Result<Reply, Error> {
    let bad = || {
        Error::Wire(WireError::Protocol {
            reason: "a reply must be (kind, payload)".into(),
        })
    };
    let PyValue::Tuple(items) = reply else {
        return Err(bad());
    };
    let [kind, payload]: [PyValue; 2] = items.try_into().map_err(|_| bad())?;
    match (kind.as_str(), payload) {
        (Some("#RETURN"), value) => Ok(Reply::Value(value)),
        (Some("#PROXY"), payload) => proxy_reply(payload),
        (Some("#ERROR"), exception) => Err(remote_exception(&exception)),
        (Some("#TRACEBACK"), PyValue::Str(text)) => Err(Error::Remote {
            class: REMOTE_ERROR.into(),
            message: text,
        }),
        (Some("#UNSERIALIZABLE"), PyValue::Str(text)) => Err(Error::Remote {
            class: REMOTE_ERROR.into(),
            message: format!("Unserializable message: {text}"),
        }),
        _ => Err(bad()),
    }
}

/// The payload of `'#PROXY'`: `(exposed, Token(typeid, address, ident))` (PROTOCOL.md §6.4).
/// The Token's address is not used: the new object lives on the server already connected to
/// (CPython's client also overwrites it), whatever address that server bound.
fn proxy_reply(payload: PyValue) -> Result<Reply, Error> {
    let bad = || {
        Error::Wire(WireError::Protocol {
            reason: "'#PROXY' must carry (exposed, Token)".into(),
        })
    };
    let PyValue::Tuple(items) = payload else {
        return Err(bad());
    };
    let [exposed, token]: [PyValue; 2] = items.try_into().map_err(|_| bad())?;
    let exposed = exposed_names(exposed).ok_or_else(bad)?;
    if token.class_name() != Some(("multiprocessing.managers", "Token")) {
        return Err(bad());
    }
    let state = match &token {
        PyValue::Object { state: Some(s), .. } | PyValue::Reduce { state: Some(s), .. } => &**s,
        _ => return Err(bad()),
    };
    let ident = match state {
        PyValue::Tuple(fields) if fields.len() == 3 => fields[2].as_str().ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    Ok(Reply::Proxy {
        exposed,
        ident: ident.to_string(),
    })
}

/// Method names sent as a tuple or list of `str` (or `None` for none).
pub(crate) fn exposed_names(exposed: PyValue) -> Option<Vec<String>> {
    match exposed {
        PyValue::Tuple(names) | PyValue::List(names) => names
            .into_iter()
            .map(|n| match n {
                PyValue::Str(s) => Some(s),
                _ => None,
            })
            .collect(),
        PyValue::None => Some(Vec::new()),
        _ => None,
    }
}

/// `queue.Empty` (CPython names it `_queue.Empty`) and `queue.Full` become [`Error::Empty`]
/// and [`Error::Full`]; any other exception [`Error::Remote`].
fn remote_exception(exception: &PyValue) -> Error {
    if let Some((size, limit)) = too_large(exception) {
        return Error::MessageTooLarge { size, limit };
    }
    match exception.class_name() {
        Some(("queue" | "_queue", "Empty")) => Error::Empty,
        Some(("queue", "Full")) => Error::Full,
        Some((module, name)) => Error::Remote {
            class: format!("{module}.{name}"),
            message: exception_message(exception),
        },
        None => Error::Wire(WireError::Protocol {
            reason: "'#ERROR' carried something other than an exception".into(),
        }),
    }
}

/// The `size` and `limit` of the `ValueError` a Rust server sends for a frame over its cap:
/// one carrying both as int attributes (a BUILD with its `__dict__`).
fn too_large(exception: &PyValue) -> Option<(u64, u64)> {
    let PyValue::Reduce {
        state: Some(state), ..
    } = exception
    else {
        return None;
    };
    if exception.class_name() != Some(("builtins", "ValueError")) {
        return None;
    }
    let PyValue::Dict(attributes) = &**state else {
        return None;
    };
    let attribute = |name: &str| {
        attributes.iter().find_map(|(k, v)| match (k, v) {
            (PyValue::Str(k), PyValue::Int(n)) if k == name => u64::try_from(*n).ok(),
            _ => None,
        })
    };
    Some((attribute("size")?, attribute("limit")?))
}

/// `str(exception)` for the common cases: its one `str` argument, or its arguments.
fn exception_message(exception: &PyValue) -> String {
    let args = match exception {
        PyValue::Reduce { args, .. } | PyValue::Object { args, .. } => &**args,
        _ => return String::new(),
    };
    match args {
        PyValue::Tuple(items) if items.is_empty() => String::new(),
        PyValue::Tuple(items) => match &items[..] {
            [PyValue::Str(s)] => s.clone(),
            [other] => format!("{other:?}"),
            _ => format!("{items:?}"),
        },
        other => format!("{other:?}"),
    }
}
