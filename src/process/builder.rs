//! [`ProcessBuilder`]: a child's settings (start method, name, daemon flag) and
//! [`ProcessBuilder::spawn`], which prepares the child's bootstrap and starts it by its method.

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child::ChildShared;
use super::handle::ReportSource;
use super::runtime::{self, Identity};
use super::{get_start_method, start, Process, StartMethod};
use crate::codec;
use crate::connection::Connection;
use crate::process::bootstrap::{self, ChildSetup, Header, Trampoline};
use crate::sys;
use crate::Error;

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
pub struct ProcessBuilder {
    method: Option<StartMethod>,
    name: Option<String>,
    daemon: Option<bool>,
}

impl ProcessBuilder {
    /// A builder with every setting at its default.
    pub fn new() -> ProcessBuilder {
        ProcessBuilder::default()
    }

    /// The start method (default: [`get_start_method`]).
    pub fn start_method(mut self, method: StartMethod) -> ProcessBuilder {
        self.method = Some(method);
        self
    }

    /// The process name (default: `Process-N`, numbered per parent, as in CPython).
    pub fn name(mut self, name: impl Into<String>) -> ProcessBuilder {
        self.name = Some(name.into());
        self
    }

    /// Whether the child dies with its parent (default: the calling process's own flag, so
    /// `false` in a main program). A daemon child is killed (SIGKILL) as soon as its parent
    /// exits, however the parent ends. A non-daemon child keeps running, as in CPython; join it.
    pub fn daemon(mut self, daemon: bool) -> ProcessBuilder {
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
                entry: bootstrap::TaggedCall::new(
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
