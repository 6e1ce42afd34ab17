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

use crate::pickle::cursor::{Cursor, Long};
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
    let mut input = Cursor::new(bytes);
    if input.peek()? == PROTO {
        input.take(2)?;
    }
    if input.u8()? != EMPTY_LIST {
        return None;
    }
    let mut out = Vec::new();
    loop {
        match input.peek()? {
            STOP => {
                input.u8()?;
                return input.is_done().then_some(out);
            }
            MARK => {
                input.u8()?;
                while input.peek()? != APPENDS {
                    out.push(R::deserialize(scalar(&mut input)?).ok()?);
                }
                input.u8()?;
            }
            _ => {
                // `item APPEND`.
                out.push(R::deserialize(scalar(&mut input)?).ok()?);
                if input.u8()? != APPEND {
                    return None;
                }
            }
        }
    }
}

/// The scalar at the cursor, if it is one.
fn scalar<'a>(input: &mut Cursor<'a>) -> Option<Scalar<'a>> {
    Some(match input.u8()? {
        BININT => Scalar::I64((input.u32()? as i32).into()),
        BININT1 => Scalar::I64(input.u8()?.into()),
        BININT2 => Scalar::I64(input.u16()?.into()),
        LONG1 => match Long::from_le(input.sized(1)?) {
            Long::Small(v) => Scalar::I64(v),
            big => Scalar::U64(big.to_u64()?),
        },
        BINFLOAT => Scalar::F64(input.f64_be()?),
        NEWTRUE => Scalar::Bool(true),
        NEWFALSE => Scalar::Bool(false),
        NONE => Scalar::None,
        BINUNICODE => Scalar::Str(std::str::from_utf8(input.sized(4)?).ok()?),
        _ => return None,
    })
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
