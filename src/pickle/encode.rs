//! The encoder: protocol 3, no memo (PROTOCOL.md §4.4).

use super::cursor::minimal_len;
use super::opcodes::*;
use super::value::PyValue;

/// Pickles `value` (protocol 3).
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{dumps, PyValue};
/// assert_eq!(dumps(&PyValue::Int(42)), b"\x80\x03K*.");
/// ```
pub fn dumps(value: &PyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    dumps_into(value, &mut out);
    out
}

/// Pickles `value` (protocol 3), appending to `out` (e.g. after room for a frame header).
///
/// # Examples
///
/// ```
/// use multiproc::pickle::{dumps_into, PyValue};
/// let mut out = vec![0; 4];
/// dumps_into(&PyValue::None, &mut out);
/// assert_eq!(&out[4..], b"\x80\x03N.");
/// ```
pub fn dumps_into(value: &PyValue, out: &mut Vec<u8>) {
    out.extend_from_slice(&[PROTO, 3]);
    write(value, out);
    out.push(STOP);
}

/// Appends `s` as a `str` (`BINUNICODE`, or `BINUNICODE8` past 4 GiB).
pub(crate) fn write_str(s: &str, out: &mut Vec<u8>) {
    write_sized(s.as_bytes(), None, BINUNICODE, BINUNICODE8, out);
}

/// Items per `APPENDS`/`SETITEMS` batch, as CPython's pickler writes them: a reader holds one
/// batch on its stack at a time, so a long list costs it no more than the list itself.
pub(crate) const BATCH: usize = 1000;

/// Appends a tuple of `items` (`EMPTY_TUPLE`, `TUPLE1`..`TUPLE3`, or `MARK` … `TUPLE`).
pub(crate) fn write_tuple(items: &[PyValue], out: &mut Vec<u8>) {
    match items.len() {
        0 => out.push(EMPTY_TUPLE),
        n @ 1..=3 => {
            items.iter().for_each(|v| write(v, out));
            out.push(TUPLE1 - 1 + n as u8);
        }
        _ => {
            out.push(MARK);
            items.iter().for_each(|v| write(v, out));
            out.push(TUPLE);
        }
    }
}

/// Appends `value`'s opcodes, without `PROTO` or `STOP` (what [`dumps_into`] writes between
/// them).
pub(crate) fn write(value: &PyValue, out: &mut Vec<u8>) {
    match value {
        PyValue::None => out.push(NONE),
        PyValue::Bool(true) => out.push(NEWTRUE),
        PyValue::Bool(false) => out.push(NEWFALSE),
        PyValue::Int(i) => write_int(*i, out),
        PyValue::BigInt(bytes) => write_long(bytes, out),
        PyValue::Float(f) => {
            out.push(BINFLOAT);
            out.extend_from_slice(&f.to_be_bytes());
        }
        PyValue::Str(s) => write_str(s, out),
        PyValue::Bytes(b) => write_sized(b, Some(SHORT_BINBYTES), BINBYTES, BINBYTES8, out),
        PyValue::ByteArray(b) => {
            write_global("builtins", "bytearray", out);
            write_sized(b, Some(SHORT_BINBYTES), BINBYTES, BINBYTES8, out);
            out.extend_from_slice(&[TUPLE1, REDUCE]);
        }
        PyValue::Tuple(items) => write_tuple(items, out),
        PyValue::List(items) => {
            out.push(EMPTY_LIST);
            for batch in items.chunks(BATCH) {
                out.push(MARK);
                batch.iter().for_each(|v| write(v, out));
                out.push(APPENDS);
            }
        }
        PyValue::Dict(items) => {
            out.push(EMPTY_DICT);
            for batch in items.chunks(BATCH) {
                out.push(MARK);
                for (k, v) in batch {
                    write(k, out);
                    write(v, out);
                }
                out.push(SETITEMS);
            }
        }
        PyValue::Set(items) | PyValue::FrozenSet(items) => {
            let name = if matches!(value, PyValue::Set(_)) {
                "set"
            } else {
                "frozenset"
            };
            write_global("builtins", name, out);
            write(&PyValue::List(items.clone()), out);
            out.extend_from_slice(&[TUPLE1, REDUCE]);
        }
        PyValue::Global { module, name } => write_global(module, name, out),
        PyValue::Reduce {
            callable,
            args,
            state,
        } => {
            write(callable, out);
            write(args, out);
            out.push(REDUCE);
            if let Some(state) = state {
                write(state, out);
                out.push(BUILD);
            }
        }
        PyValue::Object {
            class,
            args,
            kwargs,
            state,
        } => {
            write(class, out);
            write(args, out);
            match kwargs {
                // NEWOBJ_EX is protocol 4; CPython reads any opcode whatever the header says.
                Some(kwargs) => {
                    write(kwargs, out);
                    out.push(NEWOBJ_EX);
                }
                None => out.push(NEWOBJ),
            }
            if let Some(state) = state {
                write(state, out);
                out.push(BUILD);
            }
        }
    }
}

fn write_int(i: i64, out: &mut Vec<u8>) {
    if (0..=0xff).contains(&i) {
        out.extend_from_slice(&[BININT1, i as u8]);
    } else if (0..=0xffff).contains(&i) {
        out.push(BININT2);
        out.extend_from_slice(&(i as u16).to_le_bytes());
    } else if let Ok(i) = i32::try_from(i) {
        out.push(BININT);
        out.extend_from_slice(&i.to_le_bytes());
    } else {
        let bytes = i.to_le_bytes();
        write_long(&bytes[..minimal_len(&bytes)], out);
    }
}

fn write_long(bytes: &[u8], out: &mut Vec<u8>) {
    if let Ok(n) = u8::try_from(bytes.len()) {
        out.extend_from_slice(&[LONG1, n]);
    } else {
        out.push(LONG4);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(bytes);
}

/// `data` with the shortest length opcode available: `short` (1-byte length) when given, then
/// `long` (4 bytes), then `huge` (8 bytes, protocol 4, for 4 GiB and more).
fn write_sized(data: &[u8], short: Option<u8>, long: u8, huge: u8, out: &mut Vec<u8>) {
    match (short, u8::try_from(data.len()), u32::try_from(data.len())) {
        (Some(op), Ok(n), _) => out.extend_from_slice(&[op, n]),
        (_, _, Ok(n)) => {
            out.push(long);
            out.extend_from_slice(&n.to_le_bytes());
        }
        _ => {
            out.push(huge);
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
        }
    }
    out.extend_from_slice(data);
}

fn write_global(module: &str, name: &str, out: &mut Vec<u8>) {
    out.push(GLOBAL);
    out.extend_from_slice(module.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
}
