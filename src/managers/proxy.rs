//! Proxies: a handle to an object on a manager server whose method calls run remotely.

use std::marker::PhantomData;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{self, Manager, Reply};
use super::wire::{self, FrameReader, Incoming};
use crate::pickle::{self, PyValue};
use crate::{Error, WireError};

/// How long past a remote timeout a call waits for the server's reply before giving up on
/// the connection (the server runs `get(timeout=t)` itself and then replies).
const REPLY_GRACE: Duration = Duration::from_secs(10);

/// A proxy to an object on a manager server (CPython's `BaseProxy` / auto-proxy).
///
/// Calls go over proxy connections (`accept_connection`, then one request and one reply at a
/// time). The proxy keeps a small pool of them, so several threads may call at once, each on
/// its own connection, as CPython gives each thread its own. Dropping the proxy sends
/// `decref`, releasing the server's reference.
///
/// # Examples
///
/// ```
/// use multiproc::managers::{Manager, ManagerServer};
/// use multiproc::pickle::PyValue;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register_queue("q", 0);
/// let server = server.start_thread().unwrap();
/// let proxy = Manager::connect(server.address(), b"k").unwrap().create("q").unwrap();
/// proxy.call("put", vec![PyValue::Int(1)], vec![]).unwrap();
/// assert_eq!(proxy.call("qsize", vec![], vec![]).unwrap(), PyValue::Int(1));
/// ```
pub struct Proxy {
    manager: Manager,
    ident: String,
    exposed: Vec<String>,
    idle: Mutex<Vec<(TcpStream, FrameReader)>>,
    /// The server's frame cap, once known (`u64::MAX` until then): a Rust server tells it in
    /// its reply to `accept_connection`, and in its refusal of a frame over it.
    send_cap: AtomicU64,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("address", &self.manager.address)
            .field("ident", &self.ident)
            .finish()
    }
}

impl Proxy {
    pub(crate) fn new(manager: Manager, ident: String, exposed: Vec<String>) -> Proxy {
        Proxy {
            manager,
            ident,
            exposed,
            idle: Mutex::new(Vec::new()),
            send_cap: AtomicU64::new(u64::MAX),
        }
    }

    /// The object's id on the server.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let server = server.start_thread().unwrap();
    /// let proxy = Manager::connect(server.address(), b"k").unwrap().create("q").unwrap();
    /// assert!(!proxy.ident().is_empty());
    /// ```
    pub fn ident(&self) -> &str {
        &self.ident
    }

    /// The methods the server exposes for this object.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let server = server.start_thread().unwrap();
    /// let proxy = Manager::connect(server.address(), b"k").unwrap().create("q").unwrap();
    /// assert!(proxy.exposed().contains(&"put".to_string()));
    /// ```
    pub fn exposed(&self) -> &[String] {
        &self.exposed
    }

    /// Calls `method` with positional `args` and keyword `kwargs` and waits for the reply.
    ///
    /// # Errors
    ///
    /// The remote exception as a typed error ([`Error::Empty`], [`Error::Full`],
    /// [`Error::Remote`]); [`Error::Disconnected`] when the server went away;
    /// [`Error::MessageTooLarge`] when the request is over the server's frame cap (the proxy
    /// stays usable).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// use multiproc::{pickle::PyValue, Error};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let server = server.start_thread().unwrap();
    /// let proxy = Manager::connect(server.address(), b"k").unwrap().create("q").unwrap();
    /// assert!(matches!(proxy.call("get_nowait", vec![], vec![]), Err(Error::Empty)));
    /// ```
    pub fn call(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<PyValue, Error> {
        self.call_until(method, args, kwargs, None)
    }

    /// As [`call`](Self::call), but waiting for the reply only until `deadline`; then the
    /// connection is dropped (its late reply must not be read by another call) and the result
    /// is [`Error::Timeout`].
    pub(crate) fn call_until(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
        deadline: Option<Instant>,
    ) -> Result<PyValue, Error> {
        match self.call_reply(method, &args, &kwargs, deadline)? {
            Reply::Value(value) => Ok(value),
            proxy @ Reply::Proxy { .. } => {
                // Released at once (dropping the proxy sends `decref`): nothing holds it.
                drop(self.adopt(proxy));
                Err(Error::Wire(WireError::Protocol {
                    reason: format!(
                        "{method}() returned a shared object (a '#PROXY' reply): call it with call_proxy"
                    ),
                }))
            }
        }
    }

    /// Calls a method that returns a new shared object (one listed in the server's
    /// `method_to_typeid`, answered with `'#PROXY'`) and gives a proxy to that object. The
    /// proxy holds the reference the server took for it; dropping it releases it.
    ///
    /// # Errors
    ///
    /// [`WireError::Protocol`] when the method returned a plain value; otherwise as
    /// [`call`](Self::call).
    ///
    /// # Examples
    ///
    /// See [`Referent::call_for_object`](super::Referent::call_for_object).
    pub fn call_proxy(
        &self,
        method: &str,
        args: Vec<PyValue>,
        kwargs: Vec<(String, PyValue)>,
    ) -> Result<Proxy, Error> {
        match self.call_reply(method, &args, &kwargs, None)? {
            proxy @ Reply::Proxy { .. } => Ok(self.adopt(proxy)),
            Reply::Value(_) => Err(Error::Wire(WireError::Protocol {
                reason: format!("{method}() returned a value, not a shared object"),
            })),
        }
    }

    /// A proxy for the object of a `'#PROXY'` reply, on the same server. It takes over the
    /// reference the server took in creating it, so no `incref`/`decref` pair is sent
    /// (CPython's client sends both; the count ends the same, PROTOCOL.md §6.3).
    fn adopt(&self, reply: Reply) -> Proxy {
        match reply {
            Reply::Proxy { exposed, ident } => Proxy::new(self.manager.clone(), ident, exposed),
            Reply::Value(_) => unreachable!("adopt is given '#PROXY' replies only"),
        }
    }

    fn call_reply(
        &self,
        method: &str,
        args: &[PyValue],
        kwargs: &[(String, PyValue)],
        deadline: Option<Instant>,
    ) -> Result<Reply, Error> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (stream, mut reader) = match pooled {
            Some(conn) => conn,
            None => self.open()?,
        };
        // Pooled connections carry no timeout; only a call with a deadline sets (and resets) it.
        if deadline.is_some() {
            wire::until(&stream, deadline)?;
        }
        reader.set_send_cap(self.send_cap.load(Ordering::Relaxed));
        match reader.send_request(&stream, Some(&self.ident), method, args, kwargs) {
            Ok(()) => {}
            Err(e @ Error::MessageTooLarge { .. }) => {
                // Refused before anything was written: the connection is as good as before.
                if deadline.is_some() {
                    wire::until(&stream, None)?;
                }
                self.release(stream, reader);
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        let reply = reader.recv_reply(
            &stream,
            self.manager.options.max_frame,
            &self.manager.options.limits,
        )?;
        if deadline.is_some() {
            wire::until(&stream, None)?;
        }
        let reply = match reply {
            Incoming::Return(value) => Ok(Reply::Value(value)),
            Incoming::Full(reply) => client::unpack_reply(reply),
            Incoming::Request(_) => Err(Error::Wire(WireError::Protocol {
                reason: "a request where a reply was expected".into(),
            })),
        };
        match &reply {
            // The server refused the frame and closes the connection: remember its cap, so
            // that the next oversized request is refused here, and do not reuse it.
            Err(Error::MessageTooLarge { limit, .. }) => {
                self.send_cap.store(*limit, Ordering::Relaxed);
            }
            // The server refused the request for its content and closes the connection after
            // saying why: the next call opens a new one.
            Err(Error::Remote { message, .. }) if message.starts_with(wire::REFUSAL_PREFIX) => {}
            _ => self.release(stream, reader),
        }
        reply
    }

    /// Puts a connection back in the pool, for the next call.
    fn release(&self, stream: TcpStream, reader: FrameReader) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((stream, reader));
    }

    fn open(&self) -> Result<(TcpStream, FrameReader), Error> {
        let deadline = Instant::now() + self.manager.options.connect_timeout;
        let (stream, mut reader) = self.manager.open(deadline)?;
        let name = PyValue::Str(crate::current_process().name);
        reader.send_request(&stream, None, "accept_connection", &[name], &[])?;
        let reply = reader.recv_value(
            &stream,
            self.manager.options.max_frame,
            &self.manager.options.limits,
        )?;
        // A Rust server answers with its frame cap; CPython's with None.
        if let PyValue::Int(cap) = client::unpack(reply)? {
            if let Ok(cap) = u64::try_from(cap) {
                self.send_cap.store(cap, Ordering::Relaxed);
            }
        }
        Ok((stream, reader))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // Errors (the server is gone) are not worth more than the release they attempted.
        let _ = client::control_request(
            self.manager.address,
            &self.manager.auth,
            "decref",
            vec![PyValue::Str(self.ident.clone())],
            Some(Instant::now() + Duration::from_secs(2)),
        );
    }
}

/// The items of a served iterator, each fetched with one `__next__` call (CPython's
/// `IteratorProxy`): [`Proxy::iter`]. It ends when the server raises `StopIteration`; any
/// other failure is yielded once, and then the iteration ends.
pub struct RemoteIter<'a, T> {
    proxy: &'a Proxy,
    done: bool,
    _items: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for RemoteIter<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteIter")
            .field("proxy", self.proxy)
            .field("done", &self.done)
            .finish()
    }
}

impl<T: DeserializeOwned> Iterator for RemoteIter<'_, T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        if self.done {
            return None;
        }
        match self.proxy.call("__next__", Vec::new(), Vec::new()) {
            Ok(value) => Some(pickle::from_value(value).map_err(Error::from)),
            Err(Error::Remote { class, .. }) if class == "builtins.StopIteration" => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl Proxy {
    /// Iterates over a served iterator (an object exposing `__next__`, such as a generator
    /// registered with CPython's `IteratorProxy`), one remote call per item.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use multiproc::managers::{Manager, ManagerServer, PyException, Referent};
    /// use multiproc::pickle::PyValue;
    ///
    /// struct Countdown(Mutex<i64>);
    ///
    /// impl Referent for Countdown {
    ///     fn exposed(&self) -> Vec<String> {
    ///         vec!["__next__".into()]
    ///     }
    ///     fn call(&self, _: &str, _: Vec<PyValue>, _: Vec<(String, PyValue)>) -> Result<PyValue, PyException> {
    ///         let mut n = self.0.lock().unwrap();
    ///         if *n == 0 {
    ///             return Err(PyException { module: "builtins".into(), name: "StopIteration".into(), args: vec![] });
    ///         }
    ///         *n -= 1;
    ///         Ok(PyValue::Int(*n + 1))
    ///     }
    /// }
    ///
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register("countdown", || Arc::new(Countdown(Mutex::new(3))));
    /// let server = server.start_thread().unwrap();
    /// let it = Manager::connect(server.address(), b"k").unwrap().create("countdown").unwrap();
    /// let items: Vec<i64> = it.iter().collect::<Result<_, _>>().unwrap();
    /// assert_eq!(items, [3, 2, 1]);
    /// ```
    pub fn iter<T: DeserializeOwned>(&self) -> RemoteIter<'_, T> {
        RemoteIter {
            proxy: self,
            done: false,
            _items: PhantomData,
        }
    }
}

/// A typed proxy to a served `queue.Queue`: [`Manager::get_queue`]. Values of `T` travel
/// pickled; a value put by a Python client must map to `T` when read here.
///
/// Each method is the remote method of the same Python name; `try_` means `block=False`
/// (`put_nowait`/`get_nowait`), `_timeout` means `timeout=t`, executed by the server.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::managers::{Manager, ManagerServer};
/// use multiproc::Error;
///
/// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
/// server.register_queue("get_task_queue", 0);
/// let server = server.start_thread().unwrap();
/// let q = Manager::connect(server.address(), b"k").unwrap().get_queue::<(u32, String)>("get_task_queue").unwrap();
/// q.put(&(1, "a".into())).unwrap();
/// assert_eq!(q.get().unwrap(), (1, "a".to_string()));
/// assert!(matches!(q.get_timeout(Duration::from_millis(50)), Err(Error::Empty)));
/// ```
pub struct QueueProxy<T> {
    proxy: Proxy,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for QueueProxy<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueProxy")
            .field("proxy", &self.proxy)
            .finish()
    }
}

fn timeout_kw(timeout: Duration) -> Vec<(String, PyValue)> {
    vec![("timeout".into(), PyValue::Float(timeout.as_secs_f64()))]
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout.saturating_add(REPLY_GRACE))
}

/// A queue proxy from an untyped one, e.g. one [`Proxy::call_proxy`] gave.
impl<T> From<Proxy> for QueueProxy<T> {
    fn from(proxy: Proxy) -> QueueProxy<T> {
        QueueProxy::new(proxy)
    }
}

impl<T> QueueProxy<T> {
    pub(crate) fn new(proxy: Proxy) -> QueueProxy<T> {
        QueueProxy {
            proxy,
            _items: PhantomData,
        }
    }

    /// The untyped proxy underneath.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::managers::{Manager, ManagerServer};
    /// let mut server = ManagerServer::bind("127.0.0.1:0", b"k").unwrap();
    /// server.register_queue("q", 0);
    /// let server = server.start_thread().unwrap();
    /// let q = Manager::connect(server.address(), b"k").unwrap().get_queue::<u8>("q").unwrap();
    /// assert!(!q.proxy().ident().is_empty());
    /// ```
    pub fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    fn unit(&self, method: &str) -> Result<PyValue, Error> {
        self.proxy.call(method, Vec::new(), Vec::new())
    }

    /// `qsize()`.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn qsize(&self) -> Result<usize, Error> {
        match self.unit("qsize")? {
            PyValue::Int(n) if n >= 0 => Ok(n as usize),
            _ => Err(Error::Wire(WireError::Protocol {
                reason: "qsize() did not return an int".into(),
            })),
        }
    }

    /// `empty()`.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.unit("empty")?.truthy())
    }

    /// `full()`.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn is_full(&self) -> Result<bool, Error> {
        Ok(self.unit("full")?.truthy())
    }

    /// `task_done()`.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] (`ValueError`) when called more often than items were put.
    pub fn task_done(&self) -> Result<(), Error> {
        self.unit("task_done").map(|_| ())
    }

    /// `join()`: waits until every item put has been marked done.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub fn join(&self) -> Result<(), Error> {
        self.unit("join").map(|_| ())
    }
}

impl<T: Serialize> QueueProxy<T> {
    fn put_with(
        &self,
        method: &str,
        item: &T,
        kwargs: Vec<(String, PyValue)>,
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        // Serialized before anything is sent: a value that cannot travel fails here and the
        // connection stays usable.
        let value = pickle::to_value(item)?;
        self.proxy
            .call_until(method, vec![value], kwargs, deadline)
            .map(|_| ())
    }

    /// `put(item)`: waits for room as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::Pickle`] when `item` cannot be pickled; [`Error::MessageTooLarge`] when it is
    /// over the server's frame cap (nothing is put, the proxy stays usable); connection errors.
    pub fn put(&self, item: &T) -> Result<(), Error> {
        self.put_with("put", item, Vec::new(), None)
    }

    /// `put_nowait(item)`.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when there is no room now; as [`put`](Self::put).
    pub fn try_put(&self, item: &T) -> Result<(), Error> {
        self.put_with("put_nowait", item, Vec::new(), None)
    }

    /// `put(item, timeout=t)`, the wait done by the server.
    ///
    /// # Errors
    ///
    /// [`Error::Full`] when no room came in time; as [`put`](Self::put).
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<(), Error> {
        self.put_with("put", item, timeout_kw(timeout), deadline_after(timeout))
    }
}

impl<T: DeserializeOwned> QueueProxy<T> {
    fn get_with(
        &self,
        method: &str,
        kwargs: Vec<(String, PyValue)>,
        deadline: Option<Instant>,
    ) -> Result<T, Error> {
        let value = self
            .proxy
            .call_until(method, Vec::new(), kwargs, deadline)?;
        Ok(pickle::from_value(value)?)
    }

    /// `get()`: waits for an item as long as it takes.
    ///
    /// # Errors
    ///
    /// [`Error::Pickle`] when the item does not map to `T` (a Python object, for instance);
    /// connection errors.
    pub fn get(&self) -> Result<T, Error> {
        self.get_with("get", Vec::new(), None)
    }

    /// `get_nowait()`.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when there is nothing now; as [`get`](Self::get).
    pub fn try_get(&self) -> Result<T, Error> {
        self.get_with("get_nowait", Vec::new(), None)
    }

    /// `get(timeout=t)`, the wait done by the server.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when nothing came in time; as [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_with("get", timeout_kw(timeout), deadline_after(timeout))
    }
}
