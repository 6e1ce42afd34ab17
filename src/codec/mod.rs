//! Pickling values, and carrying OS handles beside the pickled bytes (DESIGN §2).
//!
//! Values travel pickled by serde-pickle (protocol 3, readable by CPython). A value that owns a
//! descriptor — a [`Connection`](crate::Connection) today, queues and locks later — cannot travel
//! as bytes. While [`encode_in`] runs, such a value's `Serialize` impl duplicates its descriptor
//! into a thread-local side table and writes only the table index; the caller sends the table's
//! descriptors with the bytes (`SCM_RIGHTS` on a Unix socket). On the other side [`decode_in`]
//! installs the received descriptors as the table, and `Deserialize` takes each one back by
//! index. Outside those two calls a handle refuses to serialize, with an error saying why: it
//! cannot be written to a file or a byte buffer and mean anything.
//!
//! A value holding ipc-channel endpoints is refused before any byte of it leaves the process
//! (`pickle::ipc_guard`): those endpoints serialize as indices into ipc-channel's own side table.
//!
//! This is CPython's reduction / resource-sharer machinery in Rust form. The same path serves
//! every start method, fork included, so there is one mechanism to test.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

pub(crate) mod refusal;
mod stream;

use crate::pickle::HANDLE;

/// Descriptors received with one message, taken out one by one as handles deserialize.
#[derive(Debug, Default)]
pub(crate) struct FdTable(Vec<Option<OwnedFd>>);

impl FdTable {
    pub(crate) fn new(fds: Vec<OwnedFd>) -> FdTable {
        FdTable(fds.into_iter().map(Some).collect())
    }
}

/// Where serialized handles go: duplicated into a table to send, or only noted (fork, where
/// the child already has them).
enum Outgoing {
    Send(Vec<OwnedFd>),
    Scan(Vec<RawFd>),
}

thread_local! {
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<FdTable>> = const { RefCell::new(None) };
}

/// Initialises this thread's side tables ahead of use (see `connection::warm_up`).
pub(crate) fn warm_up() {
    OUTGOING.with(|t| drop(t.borrow()));
    INCOMING.with(|t| drop(t.borrow()));
}

/// Pickles `value`, appending the descriptors of any handles inside it to `fds`.
pub(crate) fn encode_in<T: Serialize>(value: &T, fds: &mut Vec<OwnedFd>) -> Result<Vec<u8>, Error> {
    // Sized for a small value up front: growing from empty costs several reallocations.
    let mut bytes = Vec::with_capacity(128);
    encode_into(&mut bytes, value, fds)?;
    Ok(bytes)
}

/// Like [`encode_in`], but a small result stays on the stack: a fork child's first allocations
/// each cost copy-on-write page faults, several microseconds in all.
pub(crate) fn encode_small_in<T: Serialize>(
    value: &T,
    fds: &mut Vec<OwnedFd>,
) -> Result<Encoded, Error> {
    let mut bytes = Encoded::Inline {
        buf: [0; Encoded::INLINE],
        len: 0,
    };
    encode_into(&mut bytes, value, fds)?;
    Ok(bytes)
}

pub(crate) fn encode_into<W: std::io::Write, T: Serialize>(
    writer: &mut W,
    value: &T,
    fds: &mut Vec<OwnedFd>,
) -> Result<(), Error> {
    let previous = OUTGOING.with(|t| t.replace(Some(Outgoing::Send(std::mem::take(fds)))));
    let result = pickle_to(writer, value);
    if let Some(Outgoing::Send(table)) = OUTGOING.with(|t| t.replace(previous)) {
        *fds = table;
    }
    result
}

/// Pickles `value` into `writer`, refusing a value that holds ipc-channel endpoints: every
/// path that pickles a value for another process comes through here (see `ipc_guard`).
fn pickle_to<W: std::io::Write, T: Serialize>(writer: &mut W, value: &T) -> Result<(), Error> {
    let (result, captured) = crate::pickle::ipc_guard::serialize_watched(value, |watched| {
        serde_pickle::to_writer(writer, watched, serde_pickle::SerOptions::new())
    });
    if let Some(captured) = captured {
        return Err(Error::IpcChannelEndpoint {
            type_name: std::any::type_name::<T>(),
            channels: captured.channels,
            regions: captured.regions,
        });
    }
    result.map_err(|e| serialize_error::<T>(e))
}

/// Pickled bytes, kept inline while they are small.
// Inline on purpose: boxing the buffer would allocate, which is what this type is for avoiding.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Encoded {
    Inline {
        buf: [u8; Encoded::INLINE],
        len: usize,
    },
    Heap(Vec<u8>),
}

impl Encoded {
    /// Bytes held without allocating: enough for numbers, short strings and small tuples.
    const INLINE: usize = 232;
}

impl std::ops::Deref for Encoded {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Encoded::Inline { buf, len } => &buf[..*len],
            Encoded::Heap(bytes) => bytes,
        }
    }
}

impl std::io::Write for Encoded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            Encoded::Inline { buf, len } if *len + data.len() <= Encoded::INLINE => {
                buf[*len..*len + data.len()].copy_from_slice(data);
                *len += data.len();
            }
            Encoded::Inline { buf, len } => {
                let mut bytes = Vec::with_capacity(2 * (*len + data.len()));
                bytes.extend_from_slice(&buf[..*len]);
                bytes.extend_from_slice(data);
                *self = Encoded::Heap(bytes);
            }
            Encoded::Heap(bytes) => bytes.extend_from_slice(data),
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks that `value` pickles, without keeping the bytes, and lists the descriptors of the
/// handles inside it (a fork child inherits them and must keep them open).
pub(crate) fn scan_handles<T: Serialize>(value: &T) -> Result<Vec<RawFd>, Error> {
    let previous = OUTGOING.with(|t| t.replace(Some(Outgoing::Scan(Vec::new()))));
    let result = pickle_to(&mut std::io::sink(), value);
    let scanned = OUTGOING.with(|t| t.replace(previous));
    result?;
    Ok(match scanned {
        Some(Outgoing::Scan(fds)) => fds,
        _ => Vec::new(),
    })
}

/// The length of `value`'s pickle and whether it holds handles, without keeping the bytes.
pub(crate) fn measure<T: Serialize>(value: &T) -> Result<(usize, bool), Error> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0 += data.len();
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let previous = OUTGOING.with(|t| t.replace(Some(Outgoing::Scan(Vec::new()))));
    let mut count = Count(0);
    let result = pickle_to(&mut count, value);
    let scanned = OUTGOING.with(|t| t.replace(previous));
    result?;
    let handles = matches!(scanned, Some(Outgoing::Scan(fds)) if !fds.is_empty());
    Ok((count.0, handles))
}

/// Pickles a handle-free `value` into `out`, which must be exactly as long as its pickle (see
/// [`measure`]).
pub(crate) fn encode_exact<T: Serialize>(value: &T, out: &mut [u8]) -> Result<(), Error> {
    let expected = out.len();
    let mut rest = out;
    let mut fds = Vec::new();
    encode_into(&mut rest, value, &mut fds)?;
    if !rest.is_empty() || !fds.is_empty() {
        return Err(Error::Serialize {
            type_name: std::any::type_name::<T>(),
            reason: format!("its pickle changed between two serializations ({expected} bytes)"),
        });
    }
    Ok(())
}

fn serialize_error<T>(e: serde_pickle::Error) -> Error {
    Error::Serialize {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    }
}

/// Unpickles a `T`, taking the descriptors of any handles inside it from `fds`.
pub(crate) fn decode_in<T: DeserializeOwned>(bytes: &[u8], fds: &mut FdTable) -> Result<T, Error> {
    // Forget refusals an earlier decode on this thread left behind.
    refusal::clear();
    let previous = INCOMING.with(|t| t.replace(Some(std::mem::take(fds))));
    // The streaming reader takes what serde-pickle writes; anything else (a pickle made by
    // Python, say) goes to serde-pickle, which reads every protocol.
    let result = match stream::decode(bytes) {
        Some(decoded) => decoded.map_err(|e| e.to_string()),
        None => stream::check_foreign(bytes).and_then(|()| {
            serde_pickle::from_slice(bytes, serde_pickle::DeOptions::new())
                .map_err(|e| e.to_string())
        }),
    };
    let table = INCOMING.with(|t| t.replace(previous));
    *fds = table.unwrap_or_default();
    // A refusal recorded on the way (a function reference that failed authentication, shared
    // memory unsealed or too small: sys::shm "Sealed sizes") is its own, typed error.
    if result.is_err() {
        if let Some(refused) = refusal::take() {
            return Err(refused);
        }
    }
    result.map_err(|reason| Error::Deserialize {
        type_name: std::any::type_name::<T>(),
        reason,
    })
}

/// Pickles a value that carries no handles.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut fds = Vec::new();
    let bytes = encode_in(value, &mut fds)?;
    if fds.is_empty() {
        Ok(bytes)
    } else {
        Err(Error::Serialize {
            type_name: std::any::type_name::<T>(),
            reason: "it holds OS handles, which cannot travel as plain bytes".into(),
        })
    }
}

/// Unpickles a value that carries no handles.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    decode_in(bytes, &mut FdTable::default())
}

/// Serializes a descriptor as an index into the outgoing side table (a duplicate goes in the
/// table; the caller keeps its own).
pub(crate) fn serialize_fd<S: Serializer>(
    fd: BorrowedFd<'_>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let index = OUTGOING.with(|t| -> Result<usize, String> {
        let mut table = t.borrow_mut();
        let table = table.as_mut().ok_or_else(|| {
            "an OS handle (Connection, …) can only be serialized as part of a message to another \
             process: an argument of Process::spawn or a value given to Connection::send"
                .to_string()
        })?;
        match table {
            Outgoing::Scan(raw) => {
                raw.push(fd.as_raw_fd());
                Ok(raw.len() - 1)
            }
            Outgoing::Send(owned) => {
                if owned.len() >= crate::sys::MAX_FDS_PER_MESSAGE {
                    return Err(format!(
                        "one message can carry at most {} OS handles",
                        crate::sys::MAX_FDS_PER_MESSAGE
                    ));
                }
                let dup = fd
                    .try_clone_to_owned()
                    .map_err(|e| format!("cannot duplicate the handle: {e}"))?;
                owned.push(dup);
                Ok(owned.len() - 1)
            }
        }
    });
    match index {
        Ok(i) => serializer.serialize_newtype_struct(HANDLE, &(i as u64)),
        Err(reason) => Err(S::Error::custom(reason)),
    }
}

/// The inverse of [`serialize_fd`]: takes the descriptor back out of the incoming table.
pub(crate) fn deserialize_fd<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OwnedFd, D::Error> {
    let index = u64::deserialize(deserializer)?;
    INCOMING.with(|t| {
        let mut table = t.borrow_mut();
        let table = table.as_mut().ok_or_else(|| {
            D::Error::custom("an OS handle can only be deserialized from a message that carried it")
        })?;
        table
            .0
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| D::Error::custom(format!("the message carries no OS handle #{index}")))
    })
}

/// A descriptor that travels inside a pickled message (the shape every handle type follows).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Handle(pub(crate) OwnedFd);

#[cfg(test)]
impl Serialize for Handle {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_fd(std::os::fd::AsFd::as_fd(&self.0), serializer)
    }
}

#[cfg(test)]
impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_fd(deserializer).map(Handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_travel_by_index() {
        let (a, _b) = crate::sys::stream_pair().unwrap();
        let mut fds = Vec::new();
        let bytes = encode_in(&(7u32, Handle(a)), &mut fds).unwrap();
        assert_eq!(fds.len(), 1);
        let mut table = FdTable::new(fds);
        let (n, h): (u32, Handle) = decode_in(&bytes, &mut table).unwrap();
        assert_eq!(n, 7);
        assert!(crate::sys::fd_is_open(std::os::fd::AsRawFd::as_raw_fd(
            &h.0
        )));
    }

    #[test]
    fn handle_outside_a_message_is_a_typed_error() {
        let (a, _b) = crate::sys::stream_pair().unwrap();
        let err = serde_pickle::to_vec(&Handle(a), serde_pickle::SerOptions::new()).unwrap_err();
        assert!(err.to_string().contains("only be serialized"), "{err}");
        let err = encode(&Handle(crate::sys::stream_pair().unwrap().0)).unwrap_err();
        assert!(matches!(err, Error::Serialize { .. }), "{err}");
    }

    #[test]
    fn missing_handle_is_a_typed_error() {
        let bytes = encode(&3u64).unwrap();
        let err = decode_in::<Handle>(&bytes, &mut FdTable::default()).unwrap_err();
        assert!(matches!(err, Error::Deserialize { .. }), "{err}");
    }
}
