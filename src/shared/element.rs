//! [`Element`]: the plain numbers shared memory may hold, with CPython's `array` type codes.

use std::fmt;

mod sealed {
    pub trait Sealed {
        /// The element's bits in the low end of a `u64` (for atomic access).
        fn to_bits(self) -> u64;
        /// The inverse of `to_bits`, from the low `size_of::<Self>()` bytes.
        fn from_bits(bits: u64) -> Self;
    }
}

/// The plain numbers a [`Value`](super::Value) or [`Array`](super::Array) holds, with CPython's
/// `array` type codes.
///
/// Sealed, and implemented only for the integer and float types: another process can leave
/// any bits in shared memory, and these are the types for which every bit pattern is a
/// valid value. A `bool`, a `char`, an enum or a reference read from such memory could be
/// invalid (undefined behaviour in safe code), so they are not elements. Every access copies
/// the number in or out (one atomic load or store); no method hands out a reference or a
/// slice into shared memory.
///
/// ```compile_fail
/// // A `bool` is not an element: another process could leave a 2 in its byte.
/// let v = multiproc::Value::new(true);
/// ```
///
/// ```compile_fail
/// let a = multiproc::RawArray::new(&['a', 'b']);
/// ```
pub trait Element: sealed::Sealed + Copy + Default + fmt::Debug + Send + Sync + 'static {
    /// CPython's type code (`'i'`, `'d'`, …).
    const TYPECODE: u8;
}

macro_rules! elements {
    ($($t:ty => $code:literal, $bits:ty),* $(,)?) => {
        $(
            impl sealed::Sealed for $t {
                fn to_bits(self) -> u64 {
                    // Through the unsigned type of the same size: no sign extension.
                    u64::from(<$bits>::from_ne_bytes(self.to_ne_bytes()))
                }
                fn from_bits(bits: u64) -> Self {
                    <$t>::from_ne_bytes((bits as $bits).to_ne_bytes())
                }
            }
            impl Element for $t {
                const TYPECODE: u8 = $code;
            }
        )*
    };
}

elements! {
    i8 => b'b', u8, u8 => b'B', u8, i16 => b'h', u16, u16 => b'H', u16, i32 => b'i', u32,
    u32 => b'I', u32, i64 => b'q', u64, u64 => b'Q', u64, f32 => b'f', u32, f64 => b'd', u64,
}
