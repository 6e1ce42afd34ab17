//! The server: accepts connections, authenticates them, and serves control requests and
//! proxy calls, one thread per connection.
//!
//! - [`builder`]: [`ManagerServer`], what it serves and its limits, before it runs;
//! - [`handle`]: running it (on this thread, a background thread, a child process) and the
//!   handles to a running server, [`ServerHandle`] and [`ManagerProcess`];
//! - [`connection`]: the accept loop and one connection's life: handshake, request loop,
//!   frames refused, shutdown;
//! - [`dispatch`]: from a decoded request to its reply: control requests and proxy calls;
//! - [`objects`]: the table of served objects, their reference counts and tokens.
//!
//! [`Inner`] is the state all of them share once the server runs.

mod builder;
mod connection;
mod dispatch;
mod handle;
mod objects;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::served::{PyException, Referent};
use crate::connection::auth::AuthConfig;
use crate::pickle::{Limits, PyValue};

pub use builder::{ManagerServer, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_FRAME};
pub use handle::{ManagerProcess, ServerHandle};
use objects::{Objects, ServedObject};

/// Makes an object from `create`'s constructor arguments.
type Factory = Arc<
    dyn Fn(Vec<PyValue>, Vec<(String, PyValue)>) -> Result<Arc<dyn Referent>, PyException>
        + Send
        + Sync,
>;
type LogHook = Arc<dyn Fn(&str) + Send + Sync>;

/// What a [`ManagerServer`] was told before it runs.
struct Config {
    auth: AuthConfig,
    registry: HashMap<String, Factory>,
    max_frame: usize,
    max_connections: usize,
    handshake_timeout: Duration,
    limits: Limits,
    log: LogHook,
}

/// A running server: what every connection thread shares.
struct Inner {
    address: SocketAddr,
    /// Taken (and shut down) by `stop`; the accept loop holds its own reference until it ends.
    listener: Mutex<Option<Arc<TcpListener>>>,
    config: Config,
    objects: Mutex<Objects>,
    /// Objects whose proxies were sent to this server inside a request (e.g. a queue stored
    /// in a served list): kept for as long as the server runs, so that a proxy rebuilt from
    /// the stored data later finds its object, as CPython's `id_to_local_proxy_obj` does.
    held: Mutex<HashMap<String, ServedObject>>,
    active: AtomicUsize,
    /// Requests being answered right now: `stop` lets them write their replies.
    busy: AtomicUsize,
    stopping: AtomicBool,
    /// Open connections, to close them at shutdown.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
}

impl Inner {
    fn log(&self, line: &str) {
        (self.config.log)(line);
    }
}
