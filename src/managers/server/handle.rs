//! Running a [`ManagerServer`]: on this thread ([`serve_forever`](ManagerServer::serve_forever)),
//! on a background thread ([`ServerHandle`]) or in a forked child process
//! ([`ManagerProcess`], with the hand-off of the server to the child).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Inner, ManagerServer};
use crate::connection::auth::AuthConfig;
use crate::process::{Process, StartMethod};
use crate::Error;

impl ManagerServer {
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
    /// client sends `shutdown` or [`ManagerProcess::shutdown`] is called. [`ServedQueue`](crate::managers::ServedQueue)
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
    crate::sys::ignore_sigint();
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
            let _ = crate::managers::client::control_request(
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
