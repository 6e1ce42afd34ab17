//! TCP streams as [`super::Listener`], [`super::Client`] and the managers set them up:
//! resolving a `host:port` address, `TCP_NODELAY`, and deadlines kept as socket timeouts.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::Error;

/// Resolves a TCP address. An address of another form (no `host:port`, such as a Unix path or
/// a Windows pipe name, CPython's `TestInvalidFamily`) is [`Error::Address`] before
/// any socket is made; a name that does not resolve is [`Error::Os`].
pub(crate) fn resolve(address: impl ToSocketAddrs) -> Result<Vec<SocketAddr>, Error> {
    let addresses: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidInput => Error::Address {
                reason: format!("not a TCP address (host:port): {e}"),
            },
            _ => Error::Os {
                op: "resolve address",
                source: e.into(),
            },
        })?
        .collect();
    if addresses.is_empty() {
        return Err(Error::Address {
            reason: "the address resolves to nothing".into(),
        });
    }
    Ok(addresses)
}

/// Prepares a fresh socket: no Nagle delay (each frame is one write anyway).
pub(crate) fn configure(stream: &TcpStream) -> Result<(), Error> {
    stream
        .set_nodelay(true)
        .map_err(Error::os("setsockopt(TCP_NODELAY)"))
}

/// Sets the read and write timeouts to what is left until `deadline`.
pub(crate) fn until(stream: &TcpStream, deadline: Option<Instant>) -> Result<(), Error> {
    let left = match deadline {
        None => None,
        Some(d) => Some(
            d.checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or(Error::Timeout)?,
        ),
    };
    stream
        .set_read_timeout(left)
        .and_then(|()| stream.set_write_timeout(left))
        .map_err(Error::os("setsockopt(SO_RCVTIMEO)"))
}

/// A default for how long a whole handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
