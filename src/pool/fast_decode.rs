//! A fast path for unpickling the commonest map result: a flat list of numbers, booleans,
//! `None` or strings, as serde-pickle writes it.
//!
//! serde-pickle decodes through a value tree, and every integer above 2³¹ through a big
//! integer: ≈ 70 ns an item, most of a large `map`'s cost in the parent. This reader scans
//! exactly the opcodes serde-pickle emits for such a list (`PROTO`, `EMPTY_LIST`, `MARK`,
//! `APPENDS`/`APPEND`, `BININT*`, `LONG1` up to 64 bits, `BINFLOAT`, `NEWTRUE`/`NEWFALSE`,
//! `NONE`, `BINUNICODE`, `STOP`) and hands each item to `R`'s `Deserialize` as serde-pickle
//! would. Anything else — another opcode, a type that wants more than a scalar, any error —
//! returns `None` and the caller decodes with serde-pickle, so this path never changes a
//! result, only its cost.

use serde::de::{self, DeserializeOwned, Visitor};

use crate::pickle::opcodes::{
    APPEND, APPENDS, BINFLOAT, BININT, BININT1, BININT2, BINUNICODE, EMPTY_LIST, LONG1, MARK,
    NEWFALSE, NEWTRUE, NONE, PROTO, STOP,
};

/// One list item.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scalar<'a> {
    I64(i64),
    U64(u64),
    F64(f64),
    Bool(bool),
    None,
    Str(&'a str),
}

/// Decodes a pickled flat list, or `None` if it is not one this reader handles.
pub(crate) fn list<R: DeserializeOwned>(bytes: &[u8]) -> Option<Vec<R>> {
    let mut input = Input { rest: bytes };
    if input.peek()? == PROTO {
        input.take(2)?;
    }
    if input.byte()? != EMPTY_LIST {
        return None;
    }
    let mut out = Vec::new();
    loop {
        match input.byte()? {
            STOP => return input.rest.is_empty().then_some(out),
            MARK => {
                while input.peek()? != APPENDS {
                    out.push(R::deserialize(input.scalar()?).ok()?);
                }
                input.byte()?;
            }
            _ => {
                // `item APPEND`: step back over the opcode just read.
                input.rest = &bytes[bytes.len() - input.rest.len() - 1..];
                out.push(R::deserialize(input.scalar()?).ok()?);
                if input.byte()? != APPEND {
                    return None;
                }
            }
        }
    }
}

struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn scalar(&mut self) -> Option<Scalar<'a>> {
        Some(match self.byte()? {
            BININT => Scalar::I64(i32::from_le_bytes(self.take(4)?.try_into().ok()?).into()),
            BININT1 => Scalar::I64(self.byte()?.into()),
            BININT2 => Scalar::I64(u16::from_le_bytes(self.take(2)?.try_into().ok()?).into()),
            // Its own reading and LONG1, not `pickle::cursor`: with the shared cursor and
            // `Long` this loop measured 2-4 times slower per item (issue 13 report).
            LONG1 => match self.byte()? {
                n @ 0..=8 => {
                    // Two's complement, little-endian, sign-extended from the top byte.
                    let bytes = self.take(n.into())?;
                    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
                    let mut full = [if negative { 0xff } else { 0 }; 8];
                    full[..bytes.len()].copy_from_slice(bytes);
                    Scalar::I64(i64::from_le_bytes(full))
                }
                9 => {
                    let value = u64::from_le_bytes(self.take(8)?.try_into().ok()?);
                    if self.byte()? != 0 {
                        return None;
                    }
                    match i64::try_from(value) {
                        Ok(v) => Scalar::I64(v),
                        Err(_) => Scalar::U64(value),
                    }
                }
                _ => return None,
            },
            BINFLOAT => Scalar::F64(f64::from_be_bytes(self.take(8)?.try_into().ok()?)),
            NEWTRUE => Scalar::Bool(true),
            NEWFALSE => Scalar::Bool(false),
            NONE => Scalar::None,
            BINUNICODE => {
                let len = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
                Scalar::Str(std::str::from_utf8(self.take(len)?).ok()?)
            }
            _ => return None,
        })
    }
}

/// Why the fast path gave up; never shown (the caller falls back to serde-pickle).
#[derive(Debug)]
struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a scalar")
    }
}

impl std::error::Error for Unsupported {}

impl de::Error for Unsupported {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Unsupported
    }
}

impl<'de> de::Deserializer<'de> for Scalar<'_> {
    type Error = Unsupported;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self {
            Scalar::I64(v) => visitor.visit_i64(v),
            Scalar::U64(v) => visitor.visit_u64(v),
            Scalar::F64(v) => visitor.visit_f64(v),
            Scalar::Bool(v) => visitor.visit_bool(v),
            Scalar::None => visitor.visit_unit(),
            Scalar::Str(v) => visitor.visit_string(v.to_owned()),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Unsupported> {
        match self {
            Scalar::None => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::list;
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// The fast path agrees with serde-pickle, or declines.
    fn same<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: Vec<T>) {
        let bytes = crate::codec::encode(&value).unwrap();
        let fast = list::<T>(&bytes);
        assert_eq!(
            fast.as_ref(),
            Some(&value),
            "fast path declined or differed"
        );
        assert_eq!(crate::codec::decode::<Vec<T>>(&bytes).unwrap(), value);
    }

    #[test]
    fn agrees_with_serde_pickle() {
        same::<u64>((0..3000).map(|x| x * x * x * 1_000_003).collect());
        same::<u64>(vec![0, 1, 255, 256, 65535, 65536, 1 << 31, u64::MAX >> 1]);
        same::<i64>(vec![i64::MIN, -1, 0, i64::MAX, -(1 << 31), (1 << 31) - 1]);
        same::<u8>((0..=255).collect());
        same::<i32>(vec![i32::MIN, 0, i32::MAX]);
        same::<f64>(vec![0.5, -1e300, f64::INFINITY]);
        same::<bool>(vec![true, false]);
        same::<Option<u32>>(vec![Some(3), None, Some(1 << 31), Some(u32::MAX)]);
        same::<i64>(
            (0..64)
                .map(|b| (1i64 << b).wrapping_neg())
                .chain((0..63).map(|b| 1 << b))
                .collect(),
        );
        same::<String>(vec!["".into(), "héllo".into()]);
        same::<()>(vec![(), ()]);
        same::<u64>(Vec::new());
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        let tuples = crate::codec::encode(&vec![(1u8, 2u8)]).unwrap();
        assert!(list::<(u8, u8)>(&tuples).is_none());
        let big = crate::codec::encode(&vec![300u32]).unwrap();
        assert!(
            list::<u8>(&big).is_none(),
            "out of range must fall back (and fail there)"
        );
        let ints = crate::codec::encode(&vec![1u32]).unwrap();
        assert!(list::<u32>(&ints[..ints.len() - 1]).is_none(), "truncated");
        assert!(list::<bool>(&ints).is_none());
    }
}
