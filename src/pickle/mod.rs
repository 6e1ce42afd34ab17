//! A pickle codec for the managers' wire: a small value model, an inert decoder with limits,
//! a protocol 3 encoder, and a bridge to serde.
//!
//! # Why not serde-pickle alone
//! A manager's replies carry Python *objects*: `queue.Empty()` and `queue.Full()` are a class
//! global applied to an argument tuple, and a proxy `Token` is a class built from a state tuple.
//! serde-pickle either refuses such globals or replaces them with `None`, which would erase the
//! difference between `Empty` and `Full`. This module decodes them into data —
//! [`PyValue::Global`], [`PyValue::Reduce`], [`PyValue::Object`] — and **never imports, looks up or
//! calls anything** (CPython's own unpickler does, which is how an authenticated peer can run
//! code in a CPython manager; gh-84220). Plain payloads are then mapped to and from Rust types
//! through serde ([`to_value`], [`from_value`]); a global found where a plain value is expected
//! is refused with [`PickleError::Global`].
//!
//! # What is read and what is written
//! [`loads`] reads protocols 2 to 5 as CPython 3.8–3.14 write them (protocol 4 framing and
//! memoization, `STACK_GLOBAL`, protocol 5 `BYTEARRAY8`); it refuses the protocol 0/1 text
//! opcodes, persistent ids, extension codes and out-of-band buffers, none of which a manager
//! emits. [`dumps`] writes protocol 3 (PROTOCOL.md §4.4), which every Python 3 reads, without
//! memoization.
//!
//! Every path that pickles a value for another process (this module's [`to_value`] and the
//! codec's) runs it under `ipc_guard`, which refuses ipc-channel endpoints before a byte is
//! written: they serialize as indices into ipc-channel's own side table.
//!
//! # Limits
//! Every declared length is checked against the bytes left in the input before anything is
//! allocated. As each opcode is read, the decoder checks nesting ([`Limits::max_depth`]), the
//! number of nodes, copies made for shared references (memo gets) included
//! ([`Limits::max_nodes`]), and its memory: every allocation is charged at its real size
//! before it is made and the total live is capped at [`Limits::memory_for`] the input's length
//! (by default twice the input, at least 10 MiB), so no pickle, however hostile, makes the
//! decoder hold more than a small multiple of its own size. Each broken limit is its own
//! [`PickleError`] variant. The decoder never panics: any input gives a value or an error.
//!
//! # Examples
//!
//! ```
//! use multiproc::pickle::{self, PyValue};
//!
//! let bytes = pickle::dumps(&PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("x".into())]));
//! assert_eq!(pickle::loads(&bytes).unwrap(), PyValue::Tuple(vec![PyValue::Int(1), PyValue::Str("x".into())]));
//!
//! // Rust values go through serde:
//! let v = pickle::to_value(&(1u8, "x")).unwrap();
//! let back: (u8, String) = pickle::from_value(v).unwrap();
//! assert_eq!(back, (1, "x".to_string()));
//! ```

mod args;
mod bridge;
mod budget;
#[cfg(test)]
mod counting;
pub(crate) mod cursor;
mod decode;
mod encode;
mod fast;
pub(crate) mod ipc_guard;
pub(crate) mod opcodes;
mod value;

pub use bridge::{from_value, to_value};
pub use decode::{loads, loads_with, Limits};
pub use encode::{dumps, dumps_into};
pub(crate) use encode::{write as write_value, write_str, write_tuple, BATCH};
pub(crate) use fast::loads_items;
pub use value::{PickleError, PyValue};

/// The former name of [`PyValue`] (it collided with the shared-memory [`crate::Value`]).
#[deprecated(note = "renamed to `PyValue`")]
pub type Value = PyValue;

/// The serde newtype name a handle's index into the codec's side table travels under: the
/// codec writes it (`codec::serialize_fd`), and `ipc_guard` lets it pass.
pub(crate) const HANDLE: &str = "multiproc.Handle";

/// The unit tests measure allocations with this (thread by thread, so other tests do not
/// disturb them).
#[cfg(test)]
#[global_allocator]
static COUNTING: counting::Counting = counting::Counting;

#[cfg(test)]
mod bounds;
