//! Refusing ipc-channel endpoints before they leave the process (issue 12, item 5).
//!
//! An `ipc_channel::ipc::IpcSender`, `IpcReceiver`, `IpcBytesSender`/`Receiver`, opaque
//! endpoint or `IpcSharedMemory` serializes as a bare `usize`: an index into one of two private
//! thread-local lists in ipc-channel (`OS_IPC_CHANNELS_FOR_SERIALIZATION`,
//! `OS_IPC_SHARED_MEMORY_REGIONS_FOR_SERIALIZATION`, ipc-channel 0.23 `src/ipc.rs`). Only
//! ipc-channel's own `send` empties those lists, and it sends whatever they hold with its next
//! message. Pickled by us, an endpoint would arrive as a number that the other process looks
//! up in an empty list (a non-unwinding panic there: SIGABRT), and the entry left behind would
//! ride along with this thread's next ipc-channel message (whose receiver then panics in a
//! debug build). So a value that put anything into those lists is refused, and the lists are
//! emptied again, before anything is sent.
//!
//! Neither list can be read without changing it: the only public way to learn its length is to
//! serialize an endpoint (which appends one entry), and the only way to remove entries is an
//! ipc-channel `send` — system calls, several microseconds. So the check runs only when the
//! value gave a cheap hint. Every endpoint serializes through `serialize_u64` (a `usize`), and
//! the first endpoint of a value gets index 0 when the lists were empty before it. [`Watch`]
//! wraps every field, element, key and variant of the value and knows its static type, so it
//! notes a `serialize_u64(0)` that does *not* come from a plain `u64` or `usize` (an endpoint,
//! or some other type whose `Serialize` writes a bare `u64`, such as a `#[serde(transparent)]`
//! wrapper holding 0); only then does [`sweep`] look at the lists. Ordinary values, zeros
//! included, pay only the forwarding through [`Watch`]; `cargo bench --bench ipc_guard`
//! measures both paths.
//!
//! Limits: the check sees ipc-channel 0.23 (the version this crate links; cargo unifies it
//! with the caller's 0.23.x). A caller on another ipc-channel version has its own lists, out of
//! reach. If the lists already held entries before our serialization (something else
//! serialized an endpoint outside ipc-channel's `send` on this thread), the first index is not
//! 0 and the hint can miss; that state is already broken for ipc-channel itself. An
//! `IpcReceiver` is consumed by its own `Serialize` impl (ipc-channel moves its descriptor into
//! the list), so a refused value's receivers are closed; senders and shared memory are
//! untouched.

use std::cell::{Cell, RefCell};

use ipc_channel::ipc::{self, IpcReceiver, IpcSender, IpcSharedMemory, OpaqueIpcReceiver};
use serde::ser::{self, Serialize, Serializer};

/// What a refused value put into ipc-channel's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Captured {
    /// Channel endpoints (senders and receivers, typed, bytes or opaque).
    pub(crate) channels: usize,
    /// Shared memory regions.
    pub(crate) regions: usize,
}

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "it holds {} ipc-channel endpoint(s) and {} ipc-channel shared memory region(s), \
             which only travel inside ipc-channel's own send; send them over an ipc-channel, \
             or use a multiproc Connection or Queue instead",
            self.channels, self.regions
        )
    }
}

/// Runs `serialize` on `value` wrapped in [`Watch`], then, if the value gave the hint, empties
/// ipc-channel's lists and reports what the value had put there.
pub(crate) fn serialize_watched<T: Serialize + ?Sized, R>(
    value: &T,
    serialize: impl FnOnce(&Watch<'_, T>) -> R,
) -> (R, Option<Captured>) {
    let hint = Cell::new(false);
    let result = serialize(&Watch { value, hint: &hint });
    let captured = if hint.get() { sweep() } else { None };
    (result, captured)
}

/// A value whose serialization notes whether it wrote a `u64` equal to 0 (see the module docs).
pub(crate) struct Watch<'a, T: ?Sized> {
    value: &'a T,
    hint: &'a Cell<bool>,
}

impl<T: Serialize + ?Sized> Serialize for Watch<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(Watcher {
            inner: serializer,
            hint: self.hint,
            ty: std::any::type_name::<T>(),
        })
    }
}

/// The private tools [`sweep`] needs, made once per thread.
struct Tools {
    /// Serialized to learn the channel list's length.
    channel_probe: IpcSender<()>,
    /// Serialized to learn the shared-memory list's length.
    region_probe: IpcSharedMemory,
    /// Empties both lists: its `send` takes them, and the message names every entry by index.
    drain: IpcSender<(Vec<u64>, Vec<u64>)>,
    /// Takes every entry back out of the drained message (so each is closed, none is dropped
    /// unconsumed, which ipc-channel asserts against).
    sink: IpcReceiver<(Vec<OpaqueIpcReceiver>, Vec<IpcSharedMemory>)>,
}

impl Tools {
    fn new() -> std::io::Result<Tools> {
        let (channel_probe, _) = ipc::channel::<()>()?;
        let (drain, sink) = ipc::channel::<(Vec<u64>, Vec<u64>)>()?;
        let sink = sink.to_opaque().to();
        Ok(Tools {
            channel_probe,
            region_probe: IpcSharedMemory::from_byte(0, 1),
            drain,
            sink,
        })
    }
}

thread_local! {
    static TOOLS: RefCell<Option<Tools>> = const { RefCell::new(None) };
}

/// At most this many descriptors go in one ipc-channel message (its `MAX_FDS_IN_CMSG`).
const MAX_ENTRIES: usize = 64;

/// Learns how many entries ipc-channel's lists hold (by appending one probe to each), empties
/// them, and reports the entries that were there before the probes, if any.
fn sweep() -> Option<Captured> {
    // `try_with`: a value serialized while this thread's locals are torn down goes unchecked.
    TOOLS
        .try_with(|tools| {
            let mut tools = tools.borrow_mut();
            if tools.is_none() {
                // Without the tools (no descriptors left) nothing can be learned; the caller's value
                // then goes out unchecked, as before this guard existed.
                *tools = Tools::new().ok();
            }
            let tools = tools.as_ref()?;
            let channels = list_index(&tools.channel_probe)?;
            let regions = list_index(&tools.region_probe)?;
            let names = |n: usize| (0..=n as u64).collect::<Vec<u64>>();
            if channels + regions + 2 <= MAX_ENTRIES {
                // `send` takes both lists whole; the receiving side consumes each entry by index.
                let sent = tools.drain.send((names(channels), names(regions)));
                if sent.is_ok() {
                    drop(tools.sink.recv());
                }
            } else if cfg!(panic = "unwind") {
                // More than one message can carry: ipc-channel's own send would assert on this
                // value too. The lists are taken before the assertion, and their entries are
                // closed while the panic unwinds. (Where panics abort, the entries stay: the
                // value is refused all the same.)
                let drain = &tools.drain;
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    drain.send((Vec::new(), Vec::new()))
                }));
            }
            (channels + regions > 0).then_some(Captured { channels, regions })
        })
        .ok()
        .flatten()
}

/// The index `probe` serializes as: the length of its list before the probe was appended.
fn list_index<P: Serialize>(probe: &P) -> Option<usize> {
    match serde_pickle::value::to_value(probe) {
        Ok(serde_pickle::Value::I64(index)) => usize::try_from(index).ok(),
        _ => None,
    }
}

/// A serializer that forwards everything to `inner`, noting in `hint` a `u64` 0 written by a
/// type other than a plain integer.
struct Watcher<'a, S> {
    inner: S,
    hint: &'a Cell<bool>,
    /// The static type of the value being serialized (its `Serialize` impl called us).
    ty: &'static str,
}

/// Whether `ty` (a `type_name`) is a plain `u64` or `usize`, or a reference to one: their
/// zeros are data, not ipc-channel indices.
fn plain_integer(ty: &str) -> bool {
    matches!(ty.trim_start_matches('&'), "u64" | "usize")
}

impl<'a, S> Watcher<'a, S> {
    fn wrap<'v, T: ?Sized>(&self, value: &'v T) -> Watch<'v, T>
    where
        'a: 'v,
    {
        Watch {
            value,
            hint: self.hint,
        }
    }
}

/// The compound serializers of [`Watcher`]: each element is watched too.
struct WatchCompound<'a, C> {
    inner: C,
    hint: &'a Cell<bool>,
}

impl<'a, C> WatchCompound<'a, C> {
    fn wrap<'v, T: ?Sized>(&self, value: &'v T) -> Watch<'v, T>
    where
        'a: 'v,
    {
        Watch {
            value,
            hint: self.hint,
        }
    }
}

macro_rules! forward {
    ($($method:ident($ty:ty);)*) => {
        $(
            #[inline]
            fn $method(self, v: $ty) -> Result<S::Ok, S::Error> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'a, S: Serializer> Serializer for Watcher<'a, S> {
    type Ok = S::Ok;
    type Error = S::Error;
    type SerializeSeq = WatchCompound<'a, S::SerializeSeq>;
    type SerializeTuple = WatchCompound<'a, S::SerializeTuple>;
    type SerializeTupleStruct = WatchCompound<'a, S::SerializeTupleStruct>;
    type SerializeTupleVariant = WatchCompound<'a, S::SerializeTupleVariant>;
    type SerializeMap = WatchCompound<'a, S::SerializeMap>;
    type SerializeStruct = WatchCompound<'a, S::SerializeStruct>;
    type SerializeStructVariant = WatchCompound<'a, S::SerializeStructVariant>;

    forward! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u128(u128);
        serialize_f32(f32);
        serialize_f64(f64);
        serialize_char(char);
        serialize_str(&str);
        serialize_bytes(&[u8]);
        serialize_unit_struct(&'static str);
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<S::Ok, S::Error> {
        if v == 0 && !plain_integer(self.ty) {
            self.hint.set(true);
        }
        self.inner.serialize_u64(v)
    }

    #[inline]
    fn serialize_none(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_none()
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<S::Ok, S::Error> {
        let value = self.wrap(value);
        self.inner.serialize_some(&value)
    }

    #[inline]
    fn serialize_unit(self) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit()
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, S::Error> {
        self.inner.serialize_unit_variant(name, index, variant)
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        if name == super::HANDLE {
            // Our own handles' indices (into our side table, not ipc-channel's) are no hint.
            return self.inner.serialize_newtype_struct(name, value);
        }
        let value = self.wrap(value);
        self.inner.serialize_newtype_struct(name, &value)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<S::Ok, S::Error> {
        let value = self.wrap(value);
        self.inner
            .serialize_newtype_variant(name, index, variant, &value)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, S::Error> {
        Ok(WatchCompound {
            inner: self.inner.serialize_seq(len)?,
            hint: self.hint,
        })
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, S::Error> {
        Ok(WatchCompound {
            inner: self.inner.serialize_tuple(len)?,
            hint: self.hint,
        })
    }

    #[inline]
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, S::Error> {
        Ok(WatchCompound {
            inner: self.inner.serialize_tuple_struct(name, len)?,
            hint: self.hint,
        })
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, S::Error> {
        Ok(WatchCompound {
            inner: self
                .inner
                .serialize_tuple_variant(name, index, variant, len)?,
            hint: self.hint,
        })
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, S::Error> {
        Ok(WatchCompound {
            inner: self.inner.serialize_map(len)?,
            hint: self.hint,
        })
    }

    #[inline]
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, S::Error> {
        Ok(WatchCompound {
            inner: self.inner.serialize_struct(name, len)?,
            hint: self.hint,
        })
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, S::Error> {
        Ok(WatchCompound {
            inner: self
                .inner
                .serialize_struct_variant(name, index, variant, len)?,
            hint: self.hint,
        })
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! watch_elements {
    ($($trait:ident :: $method:ident;)*) => {
        $(
            impl<C: ser::$trait> ser::$trait for WatchCompound<'_, C> {
                type Ok = C::Ok;
                type Error = C::Error;

                #[inline]
                fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
                    let value = self.wrap(value);
                    self.inner.$method(&value)
                }

                #[inline]
                fn end(self) -> Result<C::Ok, C::Error> {
                    self.inner.end()
                }
            }
        )*
    };
}

watch_elements! {
    SerializeSeq::serialize_element;
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
}

impl<C: ser::SerializeMap> ser::SerializeMap for WatchCompound<'_, C> {
    type Ok = C::Ok;
    type Error = C::Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), C::Error> {
        let key = self.wrap(key);
        self.inner.serialize_key(&key)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), C::Error> {
        let value = self.wrap(value);
        self.inner.serialize_value(&value)
    }

    #[inline]
    fn end(self) -> Result<C::Ok, C::Error> {
        self.inner.end()
    }
}

macro_rules! watch_fields {
    ($($trait:ident;)*) => {
        $(
            impl<C: ser::$trait> ser::$trait for WatchCompound<'_, C> {
                type Ok = C::Ok;
                type Error = C::Error;

                #[inline]
                fn serialize_field<T: Serialize + ?Sized>(
                    &mut self,
                    key: &'static str,
                    value: &T,
                ) -> Result<(), C::Error> {
                    let value = self.wrap(value);
                    self.inner.serialize_field(key, &value)
                }

                #[inline]
                fn skip_field(&mut self, key: &'static str) -> Result<(), C::Error> {
                    self.inner.skip_field(key)
                }

                #[inline]
                fn end(self) -> Result<C::Ok, C::Error> {
                    self.inner.end()
                }
            }
        )*
    };
}

watch_fields! {
    SerializeStruct;
    SerializeStructVariant;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether watching `value` hints, checking that it pickles byte for byte as unwatched.
    fn hints<T: Serialize>(value: &T) -> bool {
        let opts = serde_pickle::SerOptions::new;
        let (watched, captured) = serialize_watched(value, |w| serde_pickle::to_vec(w, opts()));
        assert_eq!(captured, None);
        let hint = Cell::new(false);
        drop(serde_pickle::to_vec(&Watch { value, hint: &hint }, opts()));
        assert_eq!(
            watched.unwrap(),
            serde_pickle::to_vec(value, opts()).unwrap()
        );
        hint.get()
    }

    #[test]
    fn watching_changes_no_byte_and_hints_only_at_a_zero_not_from_an_integer() {
        use std::collections::BTreeMap;
        #[derive(serde::Serialize)]
        enum E {
            A(u64),
            B { x: Option<u64> },
        }
        #[derive(serde::Serialize)]
        #[serde(transparent)]
        struct Id(u64);
        assert!(!hints(&(1u64, "a", vec![0u32, 0], Some(0i64), 0u8)));
        // Zeros of plain u64 / usize, wherever they sit, are data.
        assert!(!hints(&(0u64, &0usize, [0u64; 3])));
        assert!(!hints(&vec![E::A(0), E::B { x: Some(0) }]));
        assert!(!hints(&BTreeMap::from([(0usize, E::A(0))])));
        // A bare u64 0 from another type is what an endpoint looks like.
        assert!(hints(&(1u8, Id(0))));
        assert!(!hints(&(1u8, Id(1))));
    }

    #[test]
    fn an_endpoint_is_captured_and_the_table_emptied() {
        let (tx, rx) = ipc::channel::<u64>().unwrap();
        let (_, captured) = serialize_watched(&(tx.clone(), 1u8), |w| {
            serde_pickle::to_vec(w, serde_pickle::SerOptions::new())
        });
        assert_eq!(
            captured,
            Some(Captured {
                channels: 1,
                regions: 0
            })
        );
        // Emptied: the next sweep finds nothing before its probes.
        assert_eq!(sweep(), None);
        tx.send(3).unwrap();
        assert_eq!(rx.recv().unwrap(), 3);
    }
}
