//! One connection's life on the server, and the accept loop that starts each on its own
//! thread: the handshake under its deadline, the request loop (a control request, or a proxy
//! connection's calls one at a time), a frame refused with a reason, a reply that cannot be
//! delivered handed back to its object, and shutting every connection down.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dispatch::{not_plain, parse_request, refused, value_error, Outcome};
use super::Inner;
use crate::connection::auth;
use crate::managers::peer;
use crate::managers::wire::{self, FrameReader, Incoming};
use crate::pickle::PyValue;
use crate::{Error, WireError};

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

impl Inner {
    pub(super) fn accept_loop(self: &Arc<Self>) -> Result<(), Error> {
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
                            source: e.into(),
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
    pub(super) fn stop(&self) {
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
    pub(super) fn drain(&self) {
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
                return Err(WireError::Protocol {
                    reason: "handshake deadline passed".into(),
                }
                .into())
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
                        (("#RETURN", PyValue::Int(cap)), Outcome::Continue)
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
                Outcome::Refused(reason) => return Err(WireError::Protocol { reason }.into()),
                Outcome::Stop => {
                    self.stop();
                    return Ok(());
                }
            }
        }
    }

    /// Hands a reply that could not be delivered back to its object
    /// ([`Referent::reply_undelivered`](crate::managers::Referent::reply_undelivered)).
    fn undeliverable(&self, ident: &str, method: &str, result: PyValue) {
        let object = self.objects().get(ident).map(|e| e.object.clone());
        if let Some(object) = object {
            let undo = std::panic::AssertUnwindSafe(|| object.reply_undelivered(method, result));
            if std::panic::catch_unwind(undo).is_err() {
                self.log(&format!("reply_undelivered({method}) of {ident} panicked"));
            }
        }
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

/// `ValueError(message)` with the attributes `size` and `limit`, as CPython pickles an
/// exception carrying attributes (a BUILD with its `__dict__`, PROTOCOL.md §5.3): a CPython
/// client reads `e.size` and `e.limit`, ours makes it [`Error::MessageTooLarge`].
fn too_large_error(size: u64, limit: u64) -> PyValue {
    let message = Error::MessageTooLarge { size, limit }.to_string();
    let int = |n: u64| PyValue::Int(i64::try_from(n).unwrap_or(i64::MAX));
    match value_error(&message) {
        PyValue::Reduce { callable, args, .. } => PyValue::Reduce {
            callable,
            args,
            state: Some(Box::new(PyValue::Dict(vec![
                (PyValue::Str("size".into()), int(size)),
                (PyValue::Str("limit".into()), int(limit)),
            ]))),
        },
        other => other,
    }
}
