//! `multiprocessing.connection.Listener` and `Client` over TCP: authenticated, framed,
//! pickled messages between two programs (Rust or CPython) without a manager.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::auth::{self, AuthConfig};
use super::frame::{self, FrameReader};
use super::tcp;
use crate::pickle::{self, Limits};
use crate::{Error, WireError};

/// The largest message a [`TcpConnection`] accepts (64 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// A TCP listener handing out authenticated connections: CPython's
/// `multiprocessing.connection.Listener(address, authkey=...)`.
///
/// With a key, every accepted connection runs the handshake (this side challenges first),
/// with a 10 s deadline; without one, none (as CPython without an authkey).
///
/// # Examples
///
/// ```
/// use multiproc::connection::{Client, Listener};
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"key")).unwrap();
/// let address = listener.address();
/// let t = std::thread::spawn(move || {
///     let conn = listener.accept().unwrap();
///     let n: i64 = conn.recv().unwrap();
///     conn.send(&(n + 1)).unwrap();
/// });
/// let conn = Client::connect(address, Some(b"key")).unwrap();
/// conn.send(&41i64).unwrap();
/// assert_eq!(conn.recv::<i64>().unwrap(), 42);
/// t.join().unwrap();
/// ```
#[derive(Debug)]
pub struct Listener {
    listener: TcpListener,
    auth: Option<AuthConfig>,
}

impl Listener {
    /// Binds `address` (port 0 picks a free port).
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the address cannot be bound (e.g. it is in use);
    /// [`Error::Address`] when it is not a TCP `host:port` address.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = multiproc::connection::Listener::bind("127.0.0.1:0", None).unwrap();
    /// assert_ne!(l.address().port(), 0);
    /// ```
    pub fn bind(address: impl ToSocketAddrs, authkey: Option<&[u8]>) -> Result<Listener, Error> {
        Ok(Listener {
            listener: TcpListener::bind(&tcp::resolve(address)?[..]).map_err(Error::os("bind"))?,
            auth: authkey.map(|key| AuthConfig {
                key: key.to_vec(),
                ..AuthConfig::default()
            }),
        })
    }

    /// The bound address.
    ///
    /// # Examples
    ///
    /// ```
    /// let l = multiproc::connection::Listener::bind("127.0.0.1:0", None).unwrap();
    /// assert!(l.address().ip().is_loopback());
    /// ```
    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Waits for a client and authenticates it.
    ///
    /// # Errors
    ///
    /// [`WireError::Auth`] when the client fails the handshake (or fails ours);
    /// [`WireError::Protocol`] when it does not speak it in time; [`Error::Os`] from `accept`.
    ///
    /// # Examples
    ///
    /// See [`Listener`].
    pub fn accept(&self) -> Result<TcpConnection, Error> {
        let (stream, _) = self.listener.accept().map_err(Error::os("accept"))?;
        tcp::configure(&stream)?;
        let mut reader = FrameReader::server();
        if let Some(auth) = &self.auth {
            let deadline = Some(Instant::now() + tcp::HANDSHAKE_TIMEOUT);
            let handshake = tcp::until(&stream, deadline)
                .and_then(|()| auth::deliver_challenge(&stream, &mut reader, auth))
                .and_then(|()| tcp::until(&stream, deadline))
                .and_then(|()| auth::answer_challenge(&stream, &mut reader, auth));
            match handshake {
                Err(Error::Timeout) => {
                    return Err(Error::Wire(WireError::Protocol {
                        reason: "handshake deadline passed".into(),
                    }))
                }
                other => other?,
            }
            tcp::until(&stream, None)?;
        }
        reader.quickack_inside_frames_only();
        Ok(TcpConnection::new(stream, reader))
    }
}

/// Connects to a [`Listener`] (or a CPython `Listener`): CPython's
/// `multiprocessing.connection.Client(address, authkey=...)`.
#[derive(Debug)]
pub enum Client {}

impl Client {
    /// Connects to `address` and, with a key, runs the handshake (the listener challenges
    /// first), within 10 s.
    ///
    /// # Errors
    ///
    /// [`WireError::Auth`] for a wrong key on either side; [`Error::Os`] when the address cannot be
    /// reached; [`Error::Address`] when it is not a TCP `host:port` address.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    /// let conn = Client::connect(listener.address(), None).unwrap();
    /// conn.send(&"hi").unwrap();
    /// assert_eq!(listener.accept().unwrap().recv::<String>().unwrap(), "hi");
    /// ```
    pub fn connect(
        address: impl ToSocketAddrs,
        authkey: Option<&[u8]>,
    ) -> Result<TcpConnection, Error> {
        let address = tcp::resolve(address)?[0];
        let deadline = Instant::now() + tcp::HANDSHAKE_TIMEOUT;
        let (stream, reader) = match authkey {
            Some(key) => {
                let auth = AuthConfig {
                    key: key.to_vec(),
                    ..AuthConfig::default()
                };
                connect_authenticated(address, &auth, deadline)?
            }
            None => {
                let stream = TcpStream::connect_timeout(&address, tcp::HANDSHAKE_TIMEOUT)
                    .map_err(Error::os("connect"))?;
                tcp::configure(&stream)?;
                (stream, FrameReader::client())
            }
        };
        Ok(TcpConnection::new(stream, reader))
    }
}

/// Connects and authenticates: answer the server's challenge, then challenge it.
pub(crate) fn connect_authenticated(
    address: SocketAddr,
    auth: &AuthConfig,
    deadline: Instant,
) -> Result<(TcpStream, FrameReader), Error> {
    let left = deadline
        .checked_duration_since(Instant::now())
        .unwrap_or(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&address, left).map_err(Error::os("connect"))?;
    tcp::configure(&stream)?;
    let mut reader = FrameReader::client();
    tcp::until(&stream, Some(deadline))?;
    auth::answer_challenge(&stream, &mut reader, auth)?;
    tcp::until(&stream, Some(deadline))?;
    auth::deliver_challenge(&stream, &mut reader, auth)?;
    tcp::until(&stream, None)?;
    Ok((stream, reader))
}

/// One end of an authenticated TCP connection: pickled messages (`send`/`recv`) or raw ones
/// (`send_bytes`/`recv_bytes`), in CPython's framing. Messages are read with the inert
/// decoder ([`crate::pickle`]) and capped at 64 MiB.
#[derive(Debug)]
pub struct TcpConnection {
    stream: TcpStream,
    reader: Mutex<FrameReader>,
    send_lock: Mutex<()>,
}

impl TcpConnection {
    fn new(stream: TcpStream, reader: FrameReader) -> TcpConnection {
        TcpConnection {
            stream,
            reader: Mutex::new(reader),
            send_lock: Mutex::new(()),
        }
    }

    fn reader(&self) -> MutexGuard<'_, FrameReader> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pickles `value` and sends it as one message.
    ///
    /// # Errors
    ///
    /// [`Error::Pickle`] when `value` does not serialize (nothing is sent);
    /// [`Error::Disconnected`] when the peer is gone.
    ///
    /// # Examples
    ///
    /// See [`Listener`].
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let value = pickle::to_value(value)?;
        let _guard = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        frame::send_value(&self.stream, &value)
    }

    /// Sends `bytes` as one message, unpickled.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] when the peer is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    /// let conn = Client::connect(listener.address(), None).unwrap();
    /// conn.send_bytes(b"raw").unwrap();
    /// assert_eq!(listener.accept().unwrap().recv_bytes().unwrap(), b"raw");
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<(), Error> {
        let _guard = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
        frame::send_bytes(&self.stream, bytes)
    }

    /// Receives one message and unpickles it into a `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] at end of stream; [`Error::Pickle`] for a message that is not
    /// a plain value of type `T`; [`WireError::Protocol`] for broken framing;
    /// [`Error::MessageTooLarge`] for a message over 64 MiB (the connection is then out of
    /// step: close it).
    ///
    /// # Examples
    ///
    /// See [`Listener`].
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let value = self
            .reader()
            .recv_value(&self.stream, MAX_MESSAGE, &Limits::default())?;
        Ok(pickle::from_value(value)?)
    }

    /// As [`recv`](Self::recv), waiting at most `timeout` for the message.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when nothing came in time (a message that had started arriving is
    /// lost with the connection: close it); as [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    /// let conn = Client::connect(listener.address(), None).unwrap();
    /// let err = conn.recv_timeout::<u8>(Duration::from_millis(20)).unwrap_err();
    /// assert!(matches!(err, multiproc::Error::Timeout));
    /// ```
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T, Error> {
        let mut reader = self.reader();
        tcp::until(&self.stream, Instant::now().checked_add(timeout))?;
        let result = reader.recv_value(&self.stream, MAX_MESSAGE, &Limits::default());
        tcp::until(&self.stream, None)?;
        Ok(pickle::from_value(result?)?)
    }

    /// Receives one message as bytes, unpickled.
    ///
    /// # Errors
    ///
    /// [`Error::Disconnected`] at end of stream; [`WireError::Protocol`] for broken framing;
    /// [`Error::MessageTooLarge`] for a message over 64 MiB (then close the connection).
    ///
    /// # Examples
    ///
    /// See [`send_bytes`](Self::send_bytes).
    pub fn recv_bytes(&self) -> Result<Vec<u8>, Error> {
        self.reader().recv(&self.stream, MAX_MESSAGE)
    }

    /// Whether a message (or the end of the stream) is ready to read, waiting at most
    /// `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Os`] when the socket cannot be queried.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    /// let client = Client::connect(listener.address(), None).unwrap();
    /// let server = listener.accept().unwrap();
    /// assert!(!client.poll(Duration::from_millis(10)).unwrap());
    /// server.send(&1).unwrap();
    /// assert!(client.poll(Duration::from_secs(1)).unwrap());
    /// ```
    pub fn poll(&self, timeout: Duration) -> Result<bool, Error> {
        let reader = self.reader();
        if reader.has_buffered() {
            return Ok(true);
        }
        let wait = timeout.max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(Error::os("setsockopt(SO_RCVTIMEO)"))?;
        let mut byte = [0u8; 1];
        let result = self.stream.peek(&mut byte);
        self.stream
            .set_read_timeout(None)
            .map_err(Error::os("setsockopt(SO_RCVTIMEO)"))?;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::ConnectionReset => Ok(true),
                _ => Err(Error::Os {
                    op: "recv",
                    source: e.into(),
                }),
            },
        }
    }
}
