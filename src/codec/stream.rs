//! A streaming reader for the pickles serde-pickle writes: values go straight into serde's
//! visitors, with no intermediate value tree and no read buffer; it allocates only to note
//! the closers of a pickle with more than 32 marks ([`Closers`]).
//!
//! `serde_pickle::from_slice` builds a `Value` tree first and allocates about 12 KiB per call
//! (an 8 KiB `BufReader` and a 128-slot stack) before it decodes anything. That costs ~200 ns
//! for a `u64` (DESIGN §9) and, in a freshly forked parent, several copy-on-write page faults
//! per decode. This reader handles exactly the opcodes serde-pickle emits at protocol 3; a
//! pickle with anything else (memo references, `GLOBAL`, Python's `TUPLE1`…) is left to
//! serde-pickle, decided by [`decode`] scanning the opcodes before it decodes anything (or,
//! for a list, as it reads: see [`decode`]).
//!
//! Pickle is a postfix language, so a streaming reader must tell some shapes apart by looking
//! ahead: after `EMPTY_LIST` a `MARK` may open a batch of the list's items (closed by
//! `APPENDS`) or a sibling tuple (closed by `TUPLE`). [`scan`] notes which opcode pops each
//! mark ([`Closers`]) on the pass it makes anyway, and the reader looks it up as it meets the
//! mark; [`Reader::closer`] walks ahead only for the lookahead of enum dicts.
//!
//! A list of scalars — a large `map`'s result — takes a fast path: inside a batch each item is
//! read by [`Reader::scalar`] and handed straight to the element's deserializer, with no
//! cursor or generic dispatch in between (issue 13: this replaced `pool/fast_decode.rs`, a
//! separate reader for such lists, at the same speed). After `EMPTY_DICT`, serde-pickle's enum form `{variant: value}` is
//! `key value SETITEM` with no mark; [`Reader::skip`] checks for it.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::pickle::cursor::{Cursor, Long};
use crate::pickle::opcodes::{
    APPENDS, BINBYTES, BINFLOAT, BININT, BININT1, BININT2, BINUNICODE, EMPTY_DICT, EMPTY_LIST,
    EMPTY_TUPLE, LONG1, MARK, NEWFALSE, NEWTRUE, NONE, PROTO, SETITEM, SETITEMS, SHORT_BINBYTES,
    STOP, TUPLE,
};

/// Nesting deeper than this is refused (serde-pickle then gets the pickle, and its own limits).
const MAX_DEPTH: usize = 256;

/// Why a pickle did not decode.
#[derive(Debug)]
pub(crate) struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl de::Error for DecodeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DecodeError(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

fn malformed(what: &str) -> DecodeError {
    DecodeError(format!("malformed pickle: {what}"))
}

/// Decodes `input` if every opcode in it is one this reader handles; `None` means "not ours:
/// ask serde-pickle" (nothing was consumed, or only a list's leading scalars: see below).
///
/// A pickle that is a list (a `map` chunk's result) is read in one pass: its batches of
/// scalars are checked as they are read, and [`scan`] runs only if something else turns up
/// (then decoding goes on from there, or the pickle goes to serde-pickle). Two passes over a
/// large list of `LONG1`s cost twice one, each a chain of dependent loads.
pub(crate) fn decode<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Option<Result<T>> {
    let list = input.len() >= 4
        && input[0] == PROTO
        && matches!(input[1], 2 | 3)
        && input[2] == EMPTY_LIST
        && input[input.len() - 1] == STOP;
    let mut reader = if list {
        Reader::new(input, input.len() - 1, None)
    } else {
        let (body_end, closers) = scan(input)?;
        Reader::new(input, body_end, Some(closers))
    };
    let result = T::deserialize(&mut reader).and_then(|value| {
        if reader.pos == reader.input.len() {
            Ok(value)
        } else {
            reader.check()?;
            Err(malformed("data after the value"))
        }
    });
    if result.is_err() && reader.closers.is_none() {
        // Read unchecked up to the error: the pickle may not be ours at all.
        let _ = reader.check();
    }
    if reader.foreign {
        return None;
    }
    Some(result)
}

/// Checks a pickle this reader leaves to serde-pickle. serde-pickle builds a value tree with
/// no limits: a memo reference is cloned at each use (a few hundred bytes can expand
/// exponentially), every opcode becomes a node, nesting recurses. So the pickle is first read
/// by the managers' decoder, whose memory is bounded by the input's length
/// ([`crate::pickle::Limits`]); one it refuses (past a limit, or an opcode it does not read,
/// such as protocol 0's text forms) is not handed on.
pub(crate) fn check_foreign(input: &[u8]) -> std::result::Result<(), String> {
    crate::pickle::loads_with(input, &crate::pickle::Limits::default())
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Checks that `input` is `PROTO 2|3`, opcodes this reader knows with their arguments in
/// bounds and marks balanced, then `STOP` as its last byte; returns where `STOP` is and which
/// opcode pops each mark.
fn scan(input: &[u8]) -> Option<(usize, Closers)> {
    if input.len() < 3 || input[0] != PROTO || !matches!(input[1], 2 | 3) {
        return None;
    }
    let stop = input.len() - 1;
    if input[stop] != STOP {
        return None;
    }
    let mut pos = 2;
    // The open marks, by number (`depth` of them).
    let mut open = [0u32; MAX_DEPTH];
    let mut depth = 0usize;
    let mut closers = Closers::default();
    while pos < stop {
        let op = input[pos];
        match op {
            MARK => {
                *open.get_mut(depth)? = u32::try_from(closers.len()).ok()?;
                depth += 1;
                closers.push(MARK);
            }
            APPENDS | SETITEMS | TUPLE => {
                depth = depth.checked_sub(1)?;
                closers.set(open[depth] as usize, op);
            }
            _ => {}
        }
        pos = next_op(input, pos, stop)?;
    }
    (pos == stop && depth == 0).then_some((stop, closers))
}

/// The opcode that pops each mark of a pickle, in the order the marks appear: the first few
/// inline, so a small message costs no allocation.
#[derive(Debug, Default)]
struct Closers {
    inline: [u8; Closers::INLINE],
    rest: Vec<u8>,
    len: usize,
}

impl Closers {
    const INLINE: usize = 32;

    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, op: u8) {
        if self.len < Self::INLINE {
            self.inline[self.len] = op;
        } else {
            self.rest.push(op);
        }
        self.len += 1;
    }

    fn set(&mut self, mark: usize, op: u8) {
        if let Some(slot) = self.slot(mark) {
            *slot = op;
        }
    }

    fn slot(&mut self, mark: usize) -> Option<&mut u8> {
        if mark < Self::INLINE {
            self.inline.get_mut(mark)
        } else {
            self.rest.get_mut(mark - Self::INLINE)
        }
    }

    #[inline]
    fn get(&self, mark: usize) -> Option<u8> {
        if mark < Self::INLINE {
            (mark < self.len).then(|| self.inline[mark])
        } else {
            self.rest.get(mark - Self::INLINE).copied()
        }
    }
}

/// The opcode at the cursor and its argument's payload (without its length prefix), if it
/// is one this reader knows and its argument is in the input; the cursor moves past them.
#[inline(always)]
fn read_op<'de>(cursor: &mut Cursor<'de>) -> Option<(u8, &'de [u8])> {
    let op = cursor.u8()?;
    let payload = match op {
        MARK | NONE | NEWTRUE | NEWFALSE | EMPTY_TUPLE | TUPLE | EMPTY_LIST | APPENDS
        | EMPTY_DICT | SETITEMS | SETITEM => &[],
        BININT1 => cursor.take(1)?,
        BININT2 => cursor.take(2)?,
        BININT => cursor.take(4)?,
        BINFLOAT => cursor.take(8)?,
        LONG1 => cursor.sized(1).filter(|bytes| bytes.len() <= 16)?,
        SHORT_BINBYTES => cursor.sized(1)?,
        BINUNICODE | BINBYTES => cursor.sized(4)?,
        _ => return None,
    };
    Some((op, payload))
}

/// The position after the opcode at `pos` and its argument, if it is one this reader knows and
/// its argument ends before `end`.
#[inline(always)]
fn next_op(input: &[u8], pos: usize, end: usize) -> Option<usize> {
    let mut cursor = Cursor::at(input.get(..end)?, pos);
    read_op(&mut cursor)?;
    Some(cursor.pos())
}

/// The decoder: a position in a pickle that [`scan`] accepted, or a list being read unchecked.
struct Reader<'de> {
    /// The whole pickle, for [`Reader::check`].
    pickle: &'de [u8],
    /// The pickle without its header and `STOP`.
    input: &'de [u8],
    pos: usize,
    depth: usize,
    /// What pops each mark, from [`scan`]; `None` while a list is read unchecked, when every
    /// mark at its level is taken for a batch and only scalars are read.
    closers: Option<Closers>,
    /// How many marks have been read: the next mark's number in `closers`.
    marks: usize,
    /// [`scan`] refused the pickle, found while reading unchecked.
    foreign: bool,
}

impl<'de> Reader<'de> {
    fn new(pickle: &'de [u8], body_end: usize, closers: Option<Closers>) -> Self {
        Reader {
            pickle,
            input: &pickle[..body_end],
            pos: 2,
            depth: 0,
            closers,
            marks: 0,
            foreign: false,
        }
    }

    /// Scans the pickle if it was being read unchecked, to go on checked from here; a pickle
    /// that is not ours is an error that makes [`decode`] return `None`.
    #[cold]
    fn check(&mut self) -> Result<()> {
        if self.closers.is_some() {
            return Ok(());
        }
        match scan(self.pickle) {
            Some((_, closers)) => {
                self.closers = Some(closers);
                Ok(())
            }
            None => {
                self.foreign = true;
                Err(malformed("not a pickle this reader reads"))
            }
        }
    }

    fn peek(&self) -> Result<u8> {
        self.input
            .get(self.pos)
            .copied()
            .ok_or_else(|| malformed("value expected"))
    }

    fn expect(&mut self, op: u8, what: &str) -> Result<()> {
        if self.peek()? == op {
            self.pos += 1;
            Ok(())
        } else {
            Err(malformed(what))
        }
    }

    /// The opcode at `self.pos` and its payload (known to be in bounds since [`scan`]), and
    /// moves past them.
    fn take_op(&mut self) -> Result<(u8, &'de [u8])> {
        let mut cursor = Cursor::at(self.input, self.pos);
        let op = read_op(&mut cursor).ok_or_else(|| malformed("unexpected opcode"))?;
        self.pos = cursor.pos();
        Ok(op)
    }

    /// The opcode that pops the mark at `at` (`APPENDS`, `SETITEMS` or `TUPLE`) and the position
    /// after it.
    fn closer(&self, at: usize) -> Option<(u8, usize)> {
        let mut marks = 0usize;
        let mut pos = at;
        while pos < self.input.len() {
            let op = self.input[pos];
            let next = next_op(self.input, pos, self.input.len())?;
            match op {
                MARK => marks += 1,
                APPENDS | SETITEMS | TUPLE => {
                    marks = marks.checked_sub(1)?;
                    if marks == 0 {
                        return Some((op, next));
                    }
                }
                _ => {}
            }
            pos = next;
        }
        None
    }

    /// Whether the mark at `at` opens a batch that `closer` ends.
    fn batch_at(&self, at: usize, closer: u8) -> Option<usize> {
        if self.input.get(at) != Some(&MARK) {
            return None;
        }
        self.closer(at)
            .and_then(|(op, end)| (op == closer).then_some(end))
    }

    /// Where the value starting at `at` ends, or `None` if no value starts there.
    fn skip(&self, at: usize, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.input.get(at)? {
            MARK => self.batch_at(at, TUPLE),
            EMPTY_LIST => Some(self.skip_batches(at + 1, APPENDS)),
            EMPTY_DICT => {
                let after = self.skip_batches(at + 1, SETITEMS);
                if after > at + 1 {
                    return Some(after);
                }
                Some(self.single_item_end(at + 1, depth).unwrap_or(at + 1))
            }
            APPENDS | SETITEMS | SETITEM | TUPLE | STOP => None,
            _ => next_op(self.input, at, self.input.len()),
        }
    }

    /// Past every `MARK … closer` batch starting at `at`.
    fn skip_batches(&self, mut at: usize, closer: u8) -> usize {
        while let Some(end) = self.batch_at(at, closer) {
            at = end;
        }
        at
    }

    /// If `key value SETITEM` starts at `at` (serde-pickle's `{variant: value}`, the only place
    /// it writes `SETITEM`, always with a string key), where it ends.
    fn single_item_end(&self, at: usize, depth: usize) -> Option<usize> {
        if self.input.get(at) != Some(&BINUNICODE) {
            return None;
        }
        let key_end = next_op(self.input, at, self.input.len())?;
        let value_end = self.skip(key_end, depth + 1)?;
        (self.input.get(value_end) == Some(&SETITEM)).then_some(value_end + 1)
    }

    /// Whether a mark at `self.pos` opens a batch that `closer` ends (from [`scan`]'s notes;
    /// unchecked, every mark is taken for one).
    #[inline]
    fn batch_here(&self, closer: u8) -> bool {
        self.input.get(self.pos) == Some(&MARK)
            && self
                .closers
                .as_ref()
                .is_none_or(|c| c.get(self.marks) == Some(closer))
    }

    /// What pops the mark read last, once checked.
    fn batch_closer(&self) -> Option<u8> {
        self.closers.as_ref()?.get(self.marks.checked_sub(1)?)
    }

    /// Moves past the mark at `self.pos`.
    #[inline]
    fn take_mark(&mut self) {
        self.pos += 1;
        self.marks += 1;
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(malformed("nested too deeply"));
        }
        Ok(())
    }

    /// The scalar at `self.pos` (a number, `True`/`False`, `None`, a string or bytes) and
    /// moves past it, or `None` (nothing moved) when a container or a closer is there.
    ///
    /// The one place opcodes become values, and the fast path of a list of scalars: reads
    /// straight from the input that [`scan`] checked (every argument is in bounds), with no
    /// cursor or visitor in between (issue 13 measured those 2-4 times slower per item).
    #[inline(always)]
    fn scalar(&mut self) -> Result<Option<Scalar<'de>>> {
        let input = self.input;
        let pos = self.pos;
        let Some(&op) = input.get(pos) else {
            return Ok(None);
        };
        let arg = |len: usize| input.get(pos + 1..pos + 1 + len).ok_or_else(truncated);
        let (scalar, len) = match op {
            BININT1 => (Scalar::I64(arg(1)?[0].into()), 1),
            BININT2 => {
                let b = arg(2)?;
                (Scalar::I64(u16::from_le_bytes([b[0], b[1]]).into()), 2)
            }
            BININT => {
                let b = arg(4)?;
                (
                    Scalar::I64(i32::from_le_bytes([b[0], b[1], b[2], b[3]]).into()),
                    4,
                )
            }
            LONG1 => {
                let n = usize::from(arg(1)?[0]);
                (Scalar::long(Long::from_le(&arg(1 + n)?[1..]))?, 1 + n)
            }
            BINFLOAT => {
                let b = arg(8)?;
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (Scalar::F64(f64::from_be_bytes(be)), 8)
            }
            NEWTRUE => (Scalar::Bool(true), 0),
            NEWFALSE => (Scalar::Bool(false), 0),
            NONE => (Scalar::None, 0),
            BINUNICODE | SHORT_BINBYTES | BINBYTES => return self.text(op).map(Some),
            _ => return Ok(None),
        };
        self.pos = pos + 1 + len;
        Ok(Some(scalar))
    }

    /// A string or bytes (`BINUNICODE`, `SHORT_BINBYTES`, `BINBYTES`) at `self.pos`: out of
    /// line, so that [`scalar`](Self::scalar) stays small enough to inline into the item loop.
    #[inline(never)]
    fn text(&mut self, op: u8) -> Result<Scalar<'de>> {
        let mut cursor = Cursor::at(self.input, self.pos);
        let (_, payload) = read_op(&mut cursor).ok_or_else(truncated)?;
        self.pos = cursor.pos();
        if op == BINUNICODE {
            std::str::from_utf8(payload)
                .map(Scalar::Str)
                .map_err(|_| malformed("string is not UTF-8"))
        } else {
            Ok(Scalar::Bytes(payload))
        }
    }
}

/// An argument past the input: [`scan`] rules this out, so it means a bug, reported as an
/// error rather than a panic.
fn truncated() -> DecodeError {
    malformed("truncated")
}

/// One scalar value, read by [`Reader::scalar`] and handed to a visitor as serde-pickle would.
#[derive(Debug, Clone, Copy)]
enum Scalar<'de> {
    I64(i64),
    U64(u64),
    I128(i128),
    F64(f64),
    Bool(bool),
    None,
    Str(&'de str),
    Bytes(&'de [u8]),
}

impl Scalar<'_> {
    /// A `LONG1` integer (at most 16 bytes, checked by [`scan`]).
    #[inline]
    fn long(long: Long<'_>) -> Result<Self> {
        if let Long::Small(v) = long {
            Ok(Scalar::I64(v))
        } else if let Some(v) = long.to_u64() {
            Ok(Scalar::U64(v))
        } else if let Some(v) = long.to_i128() {
            Ok(Scalar::I128(v))
        } else {
            Err(malformed("integer too large"))
        }
    }
}

impl<'de> de::Deserializer<'de> for Scalar<'de> {
    type Error = DecodeError;

    #[inline]
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self {
            Scalar::I64(v) => visitor.visit_i64(v),
            Scalar::U64(v) => visitor.visit_u64(v),
            Scalar::I128(v) => visitor.visit_i128(v),
            Scalar::F64(v) => visitor.visit_f64(v),
            Scalar::Bool(v) => visitor.visit_bool(v),
            Scalar::None => visitor.visit_unit(),
            Scalar::Str(v) => visitor.visit_borrowed_str(v),
            Scalar::Bytes(v) => visitor.visit_borrowed_bytes(v),
        }
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self {
            Scalar::None => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    /// A unit variant by name, as [`Reader`]'s `deserialize_enum` reads one.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self {
            Scalar::Str(name) => {
                visitor.visit_enum(de::value::BorrowedStrDeserializer::<DecodeError>::new(name))
            }
            _ => Err(malformed(
                "enums must be a variant name or a {variant: value} dict",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

impl<'de> de::Deserializer<'de> for &mut Reader<'de> {
    type Error = DecodeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let op = self.peek()?;
        match op {
            MARK => {
                self.take_mark();
                self.enter()?;
                let value = visitor.visit_seq(Tuple { reader: self })?;
                self.expect(TUPLE, "tuple has more items than its type")?;
                self.depth -= 1;
                Ok(value)
            }
            EMPTY_LIST => {
                self.pos += 1;
                self.enter()?;
                let mut items = Batches::new(self, APPENDS);
                let value = visitor.visit_seq(&mut items)?;
                items.finish()?;
                self.depth -= 1;
                Ok(value)
            }
            EMPTY_DICT => {
                let single = self.input.get(self.pos + 1) != Some(&MARK)
                    && self.single_item_end(self.pos + 1, self.depth).is_some();
                self.pos += 1;
                self.enter()?;
                let value = if single {
                    let value = visitor.visit_map(SingleItem {
                        reader: self,
                        state: 0,
                    })?;
                    self.expect(SETITEM, "map has more entries than its type")?;
                    value
                } else {
                    let mut entries = Batches::new(self, SETITEMS);
                    let value = visitor.visit_map(&mut entries)?;
                    entries.finish()?;
                    value
                };
                self.depth -= 1;
                Ok(value)
            }
            APPENDS | SETITEMS | SETITEM | TUPLE | STOP => Err(malformed("value expected")),
            EMPTY_TUPLE => {
                self.pos += 1;
                visitor.visit_seq(Empty)
            }
            _ => match self.scalar()? {
                Some(scalar) => scalar.deserialize_any(visitor),
                None => Err(malformed("unexpected opcode")),
            },
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if self.peek()? == NONE {
            self.pos += 1;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.peek()? {
            BINUNICODE => visitor.visit_enum(Variant {
                reader: self,
                wrapped: false,
            }),
            EMPTY_DICT if self.input.get(self.pos + 1) != Some(&MARK) => {
                self.pos += 1;
                self.enter()?;
                let value = visitor.visit_enum(Variant {
                    reader: &mut *self,
                    wrapped: true,
                })?;
                self.expect(SETITEM, "enum variant has more than one entry")?;
                self.depth -= 1;
                Ok(value)
            }
            _ => Err(malformed(
                "enums must be a variant name or a {variant: value} dict",
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// No items (`EMPTY_TUPLE`).
struct Empty;

impl<'de> de::SeqAccess<'de> for Empty {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, _: T) -> Result<Option<T::Value>> {
        Ok(None)
    }
}

/// The items of `MARK … TUPLE`.
struct Tuple<'a, 'de> {
    reader: &'a mut Reader<'de>,
}

impl<'de> de::SeqAccess<'de> for Tuple<'_, 'de> {
    type Error = DecodeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.reader.peek()? == TUPLE {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

/// The items of a list (`EMPTY_LIST` then batches `MARK items APPENDS`) or the entries of a
/// dict (`EMPTY_DICT` then batches `MARK key value … SETITEMS`).
struct Batches<'a, 'de> {
    reader: &'a mut Reader<'de>,
    closer: u8,
    in_batch: bool,
}

impl<'a, 'de> Batches<'a, 'de> {
    fn new(reader: &'a mut Reader<'de>, closer: u8) -> Self {
        Batches {
            reader,
            closer,
            in_batch: false,
        }
    }

    /// Whether another item follows, moving over batch boundaries.
    fn has_next(&mut self) -> Result<bool> {
        loop {
            if !self.in_batch && self.reader.pos == self.reader.input.len() {
                return Ok(false);
            }
            let op = self.reader.peek()?;
            if self.in_batch {
                if op != self.closer {
                    return Ok(true);
                }
                self.reader.pos += 1;
                self.in_batch = false;
            } else if self.reader.batch_here(self.closer) {
                self.reader.take_mark();
                self.in_batch = true;
            } else if self.reader.closers.is_none() {
                // Unchecked: neither the end nor a batch, so look at the whole pickle.
                self.reader.check()?;
            } else {
                return Ok(false);
            }
        }
    }

    /// After the visitor: every item must have been taken.
    fn finish(&mut self) -> Result<()> {
        if self.has_next()? {
            return Err(malformed("more items than the type holds"));
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for &mut Batches<'_, 'de> {
    type Error = DecodeError;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        // The fast path: inside a batch, a scalar item goes straight to the element's own
        // deserializer (a `Vec<u64>` result: one match and one `visit_i64` per item).
        if self.in_batch {
            if let Some(scalar) = self.reader.scalar()? {
                return seed.deserialize(scalar).map(Some);
            }
        }
        if !self.has_next()? {
            return Ok(None);
        }
        if let Some(scalar) = self.reader.scalar()? {
            return seed.deserialize(scalar).map(Some);
        }
        if self.reader.closers.is_none() {
            // Unchecked, and an item that is not a scalar: check the pickle, and that the
            // mark taken for this batch was one.
            self.reader.check()?;
            if self.in_batch && self.reader.batch_closer() != Some(self.closer) {
                return Err(malformed("a list batch must end with APPENDS"));
            }
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

impl<'de> de::MapAccess<'de> for &mut Batches<'_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.has_next()? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// The one entry of `EMPTY_DICT key value SETITEM`.
struct SingleItem<'a, 'de> {
    reader: &'a mut Reader<'de>,
    state: u8,
}

impl<'de> de::MapAccess<'de> for SingleItem<'_, 'de> {
    type Error = DecodeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.state > 0 {
            return Ok(None);
        }
        self.state = 1;
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

/// An enum: a variant name alone (unit variant), or inside `{variant: value}` (`wrapped`).
struct Variant<'a, 'de> {
    reader: &'a mut Reader<'de>,
    wrapped: bool,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = DecodeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        if self.reader.peek()? != BINUNICODE {
            return Err(malformed("enum variant name expected"));
        }
        let (_, name) = self.reader.take_op()?;
        let name = std::str::from_utf8(name).map_err(|_| malformed("string is not UTF-8"))?;
        let variant = seed.deserialize(name.into_deserializer())?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = DecodeError;

    fn unit_variant(self) -> Result<()> {
        if self.wrapped {
            // `{variant: None}`: what serde-pickle reads as a unit variant too.
            return de::Deserialize::deserialize(&mut *self.reader);
        }
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        if !self.wrapped {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"newtype variant",
            ));
        }
        seed.deserialize(&mut *self.reader)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        if !self.wrapped {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"tuple variant",
            ));
        }
        de::Deserializer::deserialize_any(&mut *self.reader, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if !self.wrapped {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"struct variant",
            ));
        }
        de::Deserializer::deserialize_any(&mut *self.reader, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Empty {}

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Wrapper(u32);

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Unit,
        New(i64),
        Nothing(()),
        Pair(u8, String),
        Record { a: Vec<u32>, b: Option<Box<Shape>> },
        Hollow {},
        Map(HashMap<String, Empty>),
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Everything {
        small: i8,
        int: i64,
        big: u64,
        float: f64,
        text: String,
        ch: char,
        flag: bool,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        pairs: Vec<(u8, Option<String>)>,
        map: BTreeMap<String, Shape>,
        shapes: Vec<Shape>,
        unit: (),
        unit_struct: Unit,
        empty: Empty,
        wrapper: Wrapper,
        empties: Vec<Empty>,
        nested: Vec<Vec<(Empty, (), Vec<u8>)>>,
        maps: Vec<HashMap<u16, Empty>>,
    }

    /// xorshift: reproducible pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A length that often lands on serde-pickle's batch size of 1000.
        fn len(&mut self) -> usize {
            [0, 1, 2, 3, 999, 1000, 1001, 2000, 2001][self.below(9) as usize]
        }

        fn shape(&mut self, depth: u32) -> Shape {
            match self.below(if depth > 3 { 4 } else { 7 }) {
                0 => Shape::Unit,
                1 => Shape::New(self.next() as i64),
                2 => Shape::Nothing(()),
                3 => Shape::Pair(self.next() as u8, "ü".repeat(self.below(4) as usize)),
                4 => Shape::Record {
                    a: (0..self.below(1500)).map(|i| i as u32).collect(),
                    b: (self.below(2) == 0).then(|| Box::new(self.shape(depth + 1))),
                },
                5 => Shape::Hollow {},
                _ => Shape::Map(
                    (0..self.below(3))
                        .map(|i| (i.to_string(), Empty {}))
                        .collect(),
                ),
            }
        }

        fn everything(&mut self) -> Everything {
            Everything {
                small: self.next() as i8,
                int: [0, -1, i64::MIN, i64::MAX, self.next() as i64][self.below(5) as usize],
                big: [0, 255, 65_536, u64::MAX, self.next()][self.below(5) as usize],
                float: f64::from_bits(self.next() & !0x7ff0_0000_0000_0000),
                text: "x".repeat(self.len()),
                ch: ['a', 'é', '😀'][self.below(3) as usize],
                flag: self.below(2) == 0,
                bytes: (0..self.below(300)).map(|i| i as u8).collect(),
                pairs: (0..self.len())
                    .map(|i| (i as u8, (i % 3 == 0).then(|| i.to_string())))
                    .collect(),
                map: (0..self.below(4))
                    .map(|i| (format!("k{i}"), self.shape(0)))
                    .collect(),
                shapes: (0..self.below(6)).map(|_| self.shape(0)).collect(),
                unit: (),
                unit_struct: Unit,
                empty: Empty {},
                wrapper: Wrapper(self.next() as u32),
                empties: vec![Empty {}; self.len()],
                nested: (0..self.below(3))
                    .map(|_| (0..self.below(3)).map(|_| (Empty {}, (), vec![])).collect())
                    .collect(),
                maps: (0..self.below(3))
                    .map(|_| (0..self.len() as u16).map(|k| (k, Empty {})).collect())
                    .collect(),
            }
        }
    }

    fn pickle<T: Serialize>(value: &T) -> Vec<u8> {
        serde_pickle::to_vec(value, serde_pickle::SerOptions::new()).unwrap()
    }

    #[test]
    fn reads_back_what_serde_pickle_writes() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..300 {
            let value = rng.everything();
            let bytes = pickle(&value);
            let decoded: Everything = decode(&bytes).expect("our opcodes").unwrap();
            assert_eq!(decoded, value);
        }
    }

    #[test]
    fn untyped_values_match_serde_pickle() {
        // serde-pickle reads integers beyond i64 only as errors: keep `big` in range here.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..100 {
            let mut value = rng.everything();
            value.big &= i64::MAX as u64;
            let bytes = pickle(&value);
            let ours: serde_pickle::Value = decode(&bytes).expect("our opcodes").unwrap();
            let theirs: serde_pickle::Value =
                serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
            assert_eq!(ours, theirs);
        }
    }

    #[test]
    fn integers_at_every_width() {
        for v in [
            0i64,
            1,
            -1,
            255,
            256,
            65_535,
            65_536,
            -129,
            i32::MAX as i64 + 1,
        ] {
            assert_eq!(decode::<i64>(&pickle(&v)).expect("ours").unwrap(), v);
        }
        for v in [i64::MIN, i64::MAX] {
            assert_eq!(decode::<i64>(&pickle(&v)).expect("ours").unwrap(), v);
        }
        // serde-pickle itself cannot read this one back.
        assert_eq!(
            decode::<u64>(&pickle(&u64::MAX)).expect("ours").unwrap(),
            u64::MAX
        );
        // 2**100 and -2**100 as CPython writes them (LONG1, 13 bytes).
        let mut big = b"\x80\x03\x8a\x0d".to_vec();
        big.extend([0; 12]);
        big.extend([0x10, STOP]);
        assert_eq!(decode::<i128>(&big).expect("ours").unwrap(), 1i128 << 100);
        let mut negative = b"\x80\x03\x8a\x0d".to_vec();
        negative.extend([0; 12]);
        negative.extend([0xf0, STOP]);
        assert_eq!(
            decode::<i128>(&negative).expect("ours").unwrap(),
            -(1i128 << 100)
        );
        let err = decode::<u8>(&pickle(&300u16)).unwrap().unwrap_err();
        assert!(err.to_string().contains("300"), "{err}");
    }

    #[test]
    fn type_mismatches_are_errors() {
        let bytes = pickle(&(1u8, 2u8, 3u8));
        assert!(decode::<(u8, u8)>(&bytes).unwrap().is_err());
        let bytes = pickle(&vec![1u8, 2, 3]);
        assert!(decode::<[u8; 2]>(&bytes).unwrap().is_err());
        assert!(decode::<String>(&pickle(&5u8)).unwrap().is_err());
        assert!(decode::<Shape>(&pickle(&"Nope")).unwrap().is_err());
    }

    #[test]
    fn foreign_pickles_are_left_to_serde_pickle() {
        // What CPython writes for [1, 2]: a memo PUT (`q\0`) this reader does not handle.
        let python = b"\x80\x03]q\x00(K\x01K\x02e.";
        assert!(decode::<Vec<u8>>(python).is_none());
        // Protocol 4 framing, and a tuple by TUPLE2.
        assert!(decode::<Vec<u8>>(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00].").is_none());
        assert!(decode::<(u8, u8)>(b"\x80\x03K\x01K\x02\x86.").is_none());
    }

    #[test]
    fn damaged_input_never_panics() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        let samples: Vec<Vec<u8>> = (0..20).map(|_| pickle(&rng.everything())).collect();
        for sample in &samples {
            for _ in 0..200 {
                let mut bytes = sample.clone();
                match rng.below(3) {
                    0 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
                    1 => {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.next() as u8;
                    }
                    _ => {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes.insert(at, [MARK, APPENDS, SETITEM, TUPLE][rng.below(4) as usize]);
                    }
                }
                let _ = decode::<Everything>(&bytes);
                let _ = decode::<serde_pickle::Value>(&bytes);
            }
        }
    }

    /// A pickle left to serde-pickle is bounded first: a shared-reference bomb (10^9 nodes
    /// once expanded, as serde-pickle would) and a run of `EMPTY_LIST` are refused by the
    /// managers' decoder's limits, naming them, before serde-pickle sees them.
    #[test]
    fn foreign_pickles_are_bounded_before_serde_pickle() {
        let mut bomb = vec![0x80, 0x03, b']', b'q', 0, b'(', b'K', 0];
        bomb.extend([b'K', 0].repeat(9));
        bomb.push(b'e');
        for level in 1..=9u8 {
            bomb.extend([b']', b'q', level, b'(']);
            for _ in 0..10 {
                bomb.extend([b'h', level - 1]);
            }
            bomb.push(b'e');
        }
        bomb.push(b'.');
        // A memo put so that this reader leaves it to serde-pickle.
        let mut lists = vec![0x80, 0x03, b']', b'q', 0];
        lists.resize(1 << 20, b']');
        lists.push(b'.');
        for (input, reason) in [(bomb, "memory"), (lists, "memory")] {
            assert!(
                decode::<serde_pickle::Value>(&input).is_none(),
                "left to serde-pickle"
            );
            let err = crate::codec::decode::<serde_pickle::Value>(&input).unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
        // What CPython writes for [1, 2] still goes through.
        let python = b"\x80\x03]q\x00(K\x01K\x02e.";
        let v: Vec<i32> = crate::codec::decode(python).unwrap();
        assert_eq!(v, [1, 2]);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let mut bytes = vec![PROTO, 3];
        bytes.extend(std::iter::repeat_n(MARK, 10_000));
        bytes.extend(std::iter::repeat_n(TUPLE, 10_000));
        bytes.push(STOP);
        assert!(decode::<serde_pickle::Value>(&bytes).is_none());
        // Enum dicts nest without marks.
        let mut bytes = vec![PROTO, 3];
        for _ in 0..10_000 {
            bytes.extend([EMPTY_DICT, BINUNICODE, 1, 0, 0, 0, b'V']);
        }
        bytes.push(NONE);
        bytes.extend(std::iter::repeat_n(SETITEM, 10_000));
        bytes.push(STOP);
        let result = decode::<serde_pickle::Value>(&bytes).expect("known opcodes");
        assert!(result.is_err());
    }

    /// A list of scalars (the fast path, read in one pass) decodes as serde-pickle reads it.
    fn list_matches<T>(value: Vec<T>)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let bytes = pickle(&value);
        let ours: Vec<T> = decode(&bytes).expect("our opcodes").unwrap();
        assert_eq!(ours, value);
        let theirs: Vec<T> =
            serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
        assert_eq!(theirs, value);
    }

    /// Moved from `pool/fast_decode.rs` (issue 13), whose lists this reader now takes alone.
    #[test]
    fn scalar_lists_match_serde_pickle() {
        list_matches::<u64>((0..3000).map(|x| x * x * x * 1_000_003).collect());
        list_matches::<u64>(vec![0, 1, 255, 256, 65535, 65536, 1 << 31, u64::MAX >> 1]);
        list_matches::<i64>(vec![i64::MIN, -1, 0, i64::MAX, -(1 << 31), (1 << 31) - 1]);
        list_matches::<u8>((0..=255).collect());
        list_matches::<i32>(vec![i32::MIN, 0, i32::MAX]);
        list_matches::<f64>(vec![0.5, -1e300, f64::INFINITY]);
        list_matches::<bool>(vec![true, false]);
        list_matches::<Option<u32>>(vec![Some(3), None, Some(1 << 31), Some(u32::MAX)]);
        list_matches::<i64>(
            (0..64)
                .map(|b| (1i64 << b).wrapping_neg())
                .chain((0..63).map(|b| 1 << b))
                .collect(),
        );
        list_matches::<String>(vec!["".into(), "héllo".into()]);
        list_matches::<()>(vec![(), ()]);
        list_matches::<u64>(Vec::new());
        list_matches::<Shape>(vec![Shape::Unit, Shape::New(-3), Shape::Unit]);
        // Scalars, then items that are not: decoding goes on checked.
        list_matches::<Option<(u8, u8)>>(vec![None, None, Some((1, 2)), None]);
        let err = decode::<Vec<u64>>(&pickle(&vec![-1i64]))
            .expect("ours")
            .unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
    }

    /// A list read in one pass is still checked: what is not ours goes to serde-pickle even
    /// after scalars were read, and damage is an error.
    #[test]
    fn lists_read_in_one_pass_are_checked() {
        // Python's pickle of [1, 2] without its memo PUT, then a GLOBAL among the items.
        let mut foreign = b"\x80\x03](K\x01K\x02".to_vec();
        foreign.extend(b"cbuiltins\nlen\ne.");
        assert!(decode::<Vec<serde_pickle::Value>>(&foreign).is_none());
        // A list followed by a second value.
        assert!(decode::<Vec<u8>>(b"\x80\x03](K\x01eK\x02.")
            .expect("ours")
            .is_err());
        // A mark taken for a batch that a TUPLE pops.
        assert!(decode::<Vec<u8>>(b"\x80\x03](K\x01t.")
            .expect("ours")
            .is_err());
        // Out of range and truncated.
        assert!(decode::<Vec<u8>>(&pickle(&vec![300u32]))
            .expect("ours")
            .is_err());
        let ints = pickle(&vec![1u32, 1 << 20]);
        let mut cut = ints[..ints.len() - 3].to_vec();
        cut.push(STOP);
        assert!(matches!(decode::<Vec<u32>>(&cut), None | Some(Err(_))));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any body after a protocol header: a value, an error, or "not ours" — never a panic.
        #[test]
        fn any_body_decodes_or_fails_cleanly(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut input = vec![PROTO, 3];
            input.extend(body);
            let _ = decode::<serde_pickle::Value>(&input);
            let _ = decode::<Everything>(&input);
        }

        /// Small integers and strings read back as serde-pickle wrote them.
        #[test]
        fn pairs_round_trip(n in proptest::prelude::any::<i64>(), text in ".{0,40}") {
            let bytes = pickle(&(n, text.clone()));
            proptest::prop_assert_eq!(decode::<(i64, String)>(&bytes).expect("ours").unwrap(), (n, text));
        }
    }
}
