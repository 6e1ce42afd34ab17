//! What the two [`PyValue`] front-ends (the arena decoder, `decode.rs`, and the single pass,
//! `fast.rs`) read alike: each opcode's argument from the [`Cursor`] — the protocol, a frame's
//! length, a memo index, a tuple's arity — and the scalar that a value opcode pushes, its heap
//! copy charged to the [`Budget`] before it is made.
//!
//! The front-ends differ only in what they do with what is read (the arena pushes a node, the
//! single pass a value; memo puts are kept by one and skipped by the other). Errors are the
//! full decoder's [`PickleError`]s, with its offsets; the single pass gives up on any of them.

use super::budget::{heap, Budget};
use super::cursor::{Cursor, Long};
use super::opcodes::*;
use super::value::{PickleError, PyValue};

/// The opcodes that push one scalar read by [`scalar`]; a pattern, for the front-ends' `match`.
macro_rules! scalar_opcodes {
    () => {
        NONE | NEWTRUE
            | NEWFALSE
            | BININT1
            | BININT2
            | BININT
            | LONG1
            | LONG4
            | BINFLOAT
            | SHORT_BINUNICODE
            | BINUNICODE
            | BINUNICODE8
            | SHORT_BINBYTES
            | BINBYTES
            | BINBYTES8
            | BYTEARRAY8
    };
}
pub(super) use scalar_opcodes;

/// Where the input ran out: at its end.
fn truncated(cur: &Cursor<'_>) -> PickleError {
    PickleError::Truncated {
        offset: cur.input().len(),
    }
}

/// An input that cannot be a pickle, at the cursor.
pub(super) fn malformed(cur: &Cursor<'_>, reason: &'static str) -> PickleError {
    PickleError::Malformed {
        offset: cur.pos(),
        reason,
    }
}

/// The bytes after a length of `width` bytes, to be copied to the heap: the length is
/// checked against the input, then the copy charged, before it is made.
#[inline]
fn sized_heap<'a>(
    cur: &mut Cursor<'a>,
    budget: &mut Budget,
    width: usize,
) -> Result<&'a [u8], PickleError> {
    let bytes = cur.sized(width).ok_or_else(|| truncated(cur))?;
    budget.charge(heap(bytes.len()))?;
    Ok(bytes)
}

/// The value of a `LONG1`/`LONG4` int.
#[inline]
fn int(long: Long<'_>) -> PyValue {
    match long {
        Long::Small(v) => PyValue::Int(v),
        Long::Big(bytes) => PyValue::BigInt(bytes.to_vec()),
    }
}

/// The scalar pushed by `op`, one of [`scalar_opcodes!`], read from after it; a copy to the
/// heap (a `str`, `bytes`, a big int) is charged to `budget` before it is made.
#[inline]
pub(super) fn scalar(
    cur: &mut Cursor<'_>,
    budget: &mut Budget,
    op: u8,
) -> Result<PyValue, PickleError> {
    Ok(match op {
        NONE => PyValue::None,
        NEWTRUE => PyValue::Bool(true),
        NEWFALSE => PyValue::Bool(false),
        BININT1 => PyValue::Int(cur.u8().ok_or_else(|| truncated(cur))?.into()),
        BININT2 => PyValue::Int(cur.u16().ok_or_else(|| truncated(cur))?.into()),
        BININT => PyValue::Int((cur.u32().ok_or_else(|| truncated(cur))? as i32).into()),
        LONG1 => int(Long::from_le(sized_heap(cur, budget, 1)?)),
        LONG4 => {
            let n = cur.u32().ok_or_else(|| truncated(cur))? as i32;
            let n = usize::try_from(n).map_err(|_| malformed(cur, "negative length"))?;
            let bytes = cur.take(n).ok_or_else(|| truncated(cur))?;
            budget.charge(heap(n))?;
            int(Long::from_le(bytes))
        }
        BINFLOAT => PyValue::Float(cur.f64_be().ok_or_else(|| truncated(cur))?),
        SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
            let width = match op {
                SHORT_BINUNICODE => 1,
                BINUNICODE => 4,
                _ => 8,
            };
            let bytes = sized_heap(cur, budget, width)?;
            let s =
                std::str::from_utf8(bytes).map_err(|_| malformed(cur, "invalid utf-8 in a str"))?;
            PyValue::Str(s.to_owned())
        }
        SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8 => {
            let width = match op {
                SHORT_BINBYTES => 1,
                BINBYTES => 4,
                _ => 8,
            };
            let b = sized_heap(cur, budget, width)?.to_vec();
            if op == BYTEARRAY8 {
                PyValue::ByteArray(b)
            } else {
                PyValue::Bytes(b)
            }
        }
        _ => return Err(malformed(cur, "not a scalar opcode")),
    })
}

/// The next opcode.
#[inline]
pub(super) fn opcode(cur: &mut Cursor<'_>) -> Result<u8, PickleError> {
    cur.u8().ok_or_else(|| truncated(cur))
}

/// The argument of `PROTO`: a protocol from 2 to 5.
#[inline]
pub(super) fn protocol(cur: &mut Cursor<'_>) -> Result<u8, PickleError> {
    let proto = cur.u8().ok_or_else(|| truncated(cur))?;
    if !(2..=5).contains(&proto) {
        return Err(malformed(cur, "unsupported protocol"));
    }
    Ok(proto)
}

/// The argument of `FRAME`: the frame's length (advisory: every read is bounds-checked).
#[inline]
pub(super) fn frame(cur: &mut Cursor<'_>) -> Result<u64, PickleError> {
    cur.u64().ok_or_else(|| truncated(cur))
}

/// The memo index after `BINPUT`/`BINGET` (one byte) or `LONG_BINPUT`/`LONG_BINGET` (four).
#[inline]
pub(super) fn memo_index(cur: &mut Cursor<'_>, op: u8) -> Result<u32, PickleError> {
    let index = match op {
        BINPUT | BINGET => cur.u8().map(u32::from),
        _ => cur.u32(),
    };
    index.ok_or_else(|| truncated(cur))
}

/// How many items `TUPLE1`, `TUPLE2` or `TUPLE3` takes.
#[inline]
pub(super) fn tuple_arity(op: u8) -> usize {
    usize::from(op - TUPLE1 + 1)
}

/// The `\n`-terminated line after `GLOBAL` (a module or a name), charged as a `String` before
/// it is made.
pub(super) fn line(cur: &mut Cursor<'_>, budget: &mut Budget) -> Result<String, PickleError> {
    let n = cur
        .rest()
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| truncated(cur))?;
    let bytes = cur.take(n).ok_or_else(|| truncated(cur))?;
    budget.charge(heap(n))?;
    let s = std::str::from_utf8(bytes).map_err(|_| malformed(cur, "invalid utf-8 in a str"))?;
    let s = s.to_owned();
    cur.take(1).ok_or_else(|| truncated(cur))?;
    Ok(s)
}
