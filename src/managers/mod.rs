//! Managers: objects served over TCP to many machines, wire-compatible with CPython's
//! `multiprocessing.managers.BaseManager`.
//!
//! A [`ManagerServer`] holds objects — first of all queues ([`ServedQueue`]) — and serves them
//! to clients guarded by an authkey; a [`Manager`] connects to a server (Rust or CPython) and
//! hands out proxies ([`Proxy`], [`QueueProxy`]) whose calls run on the server. Either side can
//! be an unmodified CPython 3.8+ program:
//!
//! ```text
//! # Python master                                 // Rust worker
//! class M(BaseManager): pass                      let m = Manager::connect(addr, b"abc")?;
//! M.register('get_task_queue', callable=...)      let tasks = m.get_queue::<i64>("get_task_queue")?;
//! m = M(('', 50000), b'abc'); m.start()           let n = tasks.get()?;
//! ```
//!
//! | Python | here |
//! |---|---|
//! | `BaseManager(address, authkey)` + `register(typeid, callable)` | [`ManagerServer::bind`] + [`ManagerServer::register`] / [`register_queue`](ManagerServer::register_queue) |
//! | `manager.start()`, `start(initializer)` / `get_server().serve_forever()` | [`ManagerServer::start`], [`start_with_initializer`](ManagerServer::start_with_initializer) / [`serve_forever`](ManagerServer::serve_forever); also [`start_thread`](ManagerServer::start_thread) |
//! | `manager.shutdown()` | [`ManagerProcess::shutdown`], [`ServerHandle::shutdown`], [`Manager::shutdown`] |
//! | `BaseManager(address, authkey).connect()` | [`Manager::connect`] |
//! | `manager.get_task_queue()` | [`Manager::get_queue`] (typed) or [`Manager::create`] (untyped) |
//! | `q.put(x)`, `q.put_nowait(x)`, `q.put(x, timeout=t)` | [`QueueProxy::put`], [`try_put`](QueueProxy::try_put), [`put_timeout`](QueueProxy::put_timeout) |
//! | `q.get()`, `q.get_nowait()`, `q.get(timeout=t)` | [`QueueProxy::get`], [`try_get`](QueueProxy::try_get), [`get_timeout`](QueueProxy::get_timeout) |
//! | `SyncManager`'s `Event`, `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Condition`, `Barrier` | [`ManagerServer::register_sync_types`]: [`ServedEvent`], [`ServedLock`], [`ServedSemaphore`], [`ServedCondition`], [`ServedBarrier`] |
//! | `SyncManager`'s `list`, `dict`, `Namespace`, `Value`, `Array` | [`ManagerServer::register_containers`]: [`ServedList`], [`ServedDict`], [`ServedNamespace`], [`ServedValue`], [`ServedArray`] |
//! | `queue.Empty`, `queue.Full`, other exceptions, `RemoteError` | [`Error::Empty`](crate::Error::Empty), [`Error::Full`](crate::Error::Full), [`Error::Remote`](crate::Error::Remote) |
//! | `AuthenticationError` | [`WireError::Auth`] |
//! | `multiprocessing.connection.Listener(address, authkey)` / `Client(address, authkey)` | [`Listener`] / [`Client`], giving [`TcpConnection`]s |
//!
//! # The protocol
//! Every message, both ways, is a frame: a 4-byte big-endian signed length (or −1 and an
//! 8-byte length) and the payload. Each TCP connection starts with a mutual HMAC handshake of
//! six frames:
//!
//! 1. server → client: `#CHALLENGE#` + M_s;
//! 2. client → server: the MAC of M_s;
//! 3. server → client: `#WELCOME#` or `#FAILURE#`;
//! 4. to 6. the same with the roles swapped (the client challenges the server).
//!
//! Two forms exist. CPython ≤ 3.11 sends 20 random bytes and expects a raw 16-byte HMAC-MD5;
//! CPython 3.12+ sends `{sha256}` + 40 random bytes and expects `{sha256}` + HMAC-SHA256 over
//! all 48 bytes, but also accepts a raw MD5 answer. This crate always challenges in the
//! modern form (every CPython 3.8+ answers it; [`ChallengeForm::LegacyMd5`] exists for tests),
//! answers whichever form it is sent, and can refuse MD5 answers ([`ManagerServer::strict`],
//! [`ConnectOptions::strict`]), which locks out CPython ≤ 3.11.
//!
//! After the handshake each frame is one pickle: a request `(ident, methodname, args, kwds)`
//! and a reply `(kind, payload)`, kind being `'#RETURN'`, `'#ERROR'` (an exception instance),
//! `'#TRACEBACK'` (text) or `'#UNSERIALIZABLE'`. A *control* connection carries one request
//! (`dummy`, `create`, `incref`, `decref`, `number_of_objects`, `debug_info`, `get_methods`,
//! `shutdown`) and is closed by the server; a *proxy* connection starts with
//! `accept_connection` and then carries any number of method calls, one at a time. `create`
//! takes one reference to the object for the proxy; dropping the proxy sends `decref`.
//!
//! # Security
//! The authkey is a full credential **for CPython peers**: a CPython server or client unpickles
//! whatever an authenticated peer sends, and pickles can run code. This crate is stricter:
//! - nothing is decoded before both sides are authenticated; handshake frames are capped at
//!   256 bytes and the whole handshake has a deadline ([`ManagerServer::handshake_timeout`]);
//! - frames after it are capped ([`ManagerServer::max_frame`], checked on the declared length
//!   before allocating), pickles are capped in nesting depth, and decoding never executes
//!   anything ([`crate::pickle`]): globals are data, refused where a plain value is expected;
//! - a wrong key, garbage, a truncated frame or an absurd length closes that one connection,
//!   with the reason sent to the log hook ([`ManagerServer::on_log`]); the number of
//!   simultaneous connections is bounded ([`ManagerServer::max_connections`]);
//! - a request the server refuses once authenticated — a frame over the cap, a pickle that
//!   breaks a decoding limit or does not decode, a Python object in the request's envelope or
//!   in the arguments of a control request other than `create` and `get_methods` — is
//!   answered with `'#ERROR'` `ValueError` naming the reason (a CPython client raises it),
//!   logged, and its connection closed. (The arguments of a method of a served object may be
//!   Python objects: a queue carries them inertly.)
//!
//! # A client that dies
//! A served call that waits (a queue's `get`, a lock's `acquire`, a barrier's `wait`) watches
//! its client's socket: if the client dies, the call stops waiting without taking anything,
//! and a reply that cannot be delivered is given back to the object
//! ([`Referent::reply_undelivered`]): an item goes back to the head of its queue, a lock or a
//! permit is released; a barrier a dead party waited on is broken. CPython's server instead
//! hands the next item to the dead client's thread, which loses it.
//!
//! The traffic itself is neither encrypted nor integrity-protected: run it on a trusted
//! network, or inside TLS, SSH or WireGuard.
//!
//! # Latency
//! Every socket has `TCP_NODELAY` and every frame leaves in one write. Before each read the
//! receiver re-arms `TCP_QUICKACK`: CPython writes frames above 16 KiB in two pieces, and its
//! handshake would otherwise stall on delayed ACKs (≈ 44 ms per CPython `connect()` against a
//! CPython server on Linux, well under a millisecond against this one).
//!
//! # Differences from CPython
//! - A Rust server answers `accept_connection` with its frame cap instead of `None`
//!   (CPython's clients ignore the value); see [`ManagerServer::max_frame`].
//! - A factory registered with [`ManagerServer::register`] takes no constructor arguments;
//!   one registered with [`ManagerServer::register_with_args`] gets them.
//! - `method_to_typeid` belongs to the served object rather than to its registration
//!   ([`Referent::method_to_typeid`], [`Referent::call_for_object`]): a Rust method cannot
//!   return an object through a [`PyValue`](crate::pickle::PyValue). The typeid it names need not
//!   be registered on the server. A Rust client gets the new object's proxy with
//!   [`Proxy::call_proxy`]; it takes over the reference the server took, so it sends no
//!   `incref`/`decref` pair (the count ends the same as with CPython's client).
//! - Served containers ([`ManagerServer::register_containers`]) keep items as data (a proxy
//!   stored in one stays data too, and its object is kept alive on the server for it, as
//!   CPython does); `list.sort` takes no `key`, a `dict` is searched linearly, and there is
//!   no served `set`. A served `Condition` has its own `RLock` (no `Condition(lock)`), and a served
//!   `Barrier` no `action`: callables and proxies cannot travel into a Rust server.
//! - [`ManagerServer::start`] forks (Rust closures cannot be re-created in a re-executed
//!   binary).
//! - Queue items are kept as inert pickled data, so a Rust-served queue carries Python objects
//!   between Python clients; a Rust client reading one gets [`Error::Pickle`](crate::Error::Pickle).

mod client;
mod peer;
mod proxy;
mod served;
mod server;
mod wire;

pub use crate::connection::auth::ChallengeForm;
pub use crate::connection::{Client, Listener, TcpConnection};
pub use crate::error::WireError;
pub use client::{ConnectOptions, Manager};
pub use proxy::{Proxy, QueueProxy, RemoteIter};
#[allow(deprecated)] // the old name stays exported for existing users
pub use served::bind;
pub use served::{
    bind_arguments, PyException, Referent, ServedArray, ServedBarrier, ServedCondition, ServedDict,
    ServedEvent, ServedList, ServedLock, ServedNamespace, ServedQueue, ServedSemaphore,
    ServedValue,
};
pub use server::{
    ManagerProcess, ManagerServer, ServerHandle, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME,
};
