//! What every pickle reader reads with: a bounds-checked cursor over the input, and the one
//! decoding of `LONG1`/`LONG4` integers.
//!
//! The cursor never reads past its input and never allocates: a length prefix is checked
//! against the bytes left before the slice it declares is handed out, so a reader can charge a
//! copy to its budget (or refuse it) before it makes one. Every read that runs out of input is
//! `None`; each reader turns that into its own error (or gives up, for the fast paths).

/// A position in a pickle's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `input`.
    #[inline]
    pub(crate) fn new(input: &'a [u8]) -> Cursor<'a> {
        Cursor::at(input, 0)
    }

    /// A cursor at `pos` in `input` (reads past the end are refused, as always).
    #[inline]
    pub(crate) fn at(input: &'a [u8], pos: usize) -> Cursor<'a> {
        Cursor { input, pos }
    }

    /// How many bytes have been read.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// The whole input.
    #[inline]
    pub(crate) fn input(&self) -> &'a [u8] {
        self.input
    }

    /// The bytes not read yet.
    #[inline]
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.input.get(self.pos..).unwrap_or_default()
    }

    /// Whether every byte has been read.
    #[inline]
    pub(crate) fn is_done(&self) -> bool {
        self.pos >= self.input.len()
    }

    /// The next byte, not consumed.
    #[inline]
    pub(crate) fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// The next `n` bytes, if there are that many.
    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.input.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    /// The next `N` bytes as an array.
    #[inline]
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// One byte.
    #[inline]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    /// A little-endian `u16`.
    #[inline]
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    /// A little-endian `u32`.
    #[inline]
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    #[inline]
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// A big-endian `f64` (`BINFLOAT`).
    #[inline]
    pub(crate) fn f64_be(&mut self) -> Option<f64> {
        self.array().map(f64::from_be_bytes)
    }

    /// The bytes after a little-endian length of `width` bytes (1, 4 or 8), if the input holds
    /// that many: the length is checked against what is left before anything is handed out.
    #[inline]
    pub(crate) fn sized(&mut self, width: usize) -> Option<&'a [u8]> {
        let len = match width {
            1 => self.u8()?.into(),
            4 => self.u32()?.into(),
            _ => self.u64()?,
        };
        // A length beyond usize cannot fit in the input either.
        self.take(usize::try_from(len).ok()?)
    }
}

/// An integer read from `LONG1`/`LONG4` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Long<'a> {
    /// One that fits an `i64`.
    Small(i64),
    /// One that does not: its little-endian two's complement bytes in minimal form (no
    /// redundant sign byte), 9 or more of them.
    Big(&'a [u8]),
}

impl Long<'_> {
    /// Decodes little-endian two's complement `bytes` (empty is 0), as `LONG1`/`LONG4` hold.
    #[inline]
    pub(crate) fn from_le(bytes: &[u8]) -> Long<'_> {
        // Up to 8 bytes, sign-extending gives the value whatever the redundant bytes; past 8
        // (rare: a map of big numbers) the minimal form decides.
        let bytes = match bytes.len() {
            0..=8 => bytes,
            _ => &bytes[..minimal_len(bytes)],
        };
        match bytes.len() {
            0 => Long::Small(0),
            n @ 1..=8 => {
                // Assembled from two overlapping loads: a copy into an array would cost a
                // `memcpy` call and a stalled load per item, a loop a chain of shifts (each
                // several times the rest of a large `map`'s decode).
                let raw = if n >= 4 {
                    let low = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                    let high = u32::from_le_bytes([
                        bytes[n - 4],
                        bytes[n - 3],
                        bytes[n - 2],
                        bytes[n - 1],
                    ]);
                    u64::from(low) | u64::from(high) << (8 * (n - 4))
                } else {
                    u64::from(bytes[0])
                        | u64::from(bytes[n / 2]) << (8 * (n / 2))
                        | u64::from(bytes[n - 1]) << (8 * (n - 1))
                };
                let unused = 64 - 8 * n as u32;
                Long::Small(((raw << unused) as i64) >> unused)
            }
            _ => Long::Big(bytes),
        }
    }

    /// The value as a `u64`, if it is one.
    #[inline]
    pub(crate) fn to_u64(self) -> Option<u64> {
        match self {
            Long::Small(v) => u64::try_from(v).ok(),
            Long::Big(&[ref low @ .., 0]) if low.len() == 8 => {
                Some(u64::from_le_bytes(low.try_into().ok()?))
            }
            Long::Big(_) => None,
        }
    }

    /// The value as an `i128`, if it is one.
    #[inline]
    pub(crate) fn to_i128(self) -> Option<i128> {
        match self {
            Long::Small(v) => Some(v.into()),
            Long::Big(bytes) if bytes.len() <= 16 => {
                let mut le = [sign_fill(bytes); 16];
                le[..bytes.len()].copy_from_slice(bytes);
                Some(i128::from_le_bytes(le))
            }
            Long::Big(_) => None,
        }
    }
}

/// The byte that sign-extends little-endian two's complement `bytes`.
#[inline]
fn sign_fill(bytes: &[u8]) -> u8 {
    match bytes.last() {
        Some(b) if b & 0x80 != 0 => 0xff,
        _ => 0,
    }
}

/// How many of little-endian two's complement `bytes` are needed for the same value (at least
/// one when there is any): trailing sign bytes that the byte below them repeats are dropped.
pub(crate) fn minimal_len(bytes: &[u8]) -> usize {
    let fill = sign_fill(bytes);
    let negative = fill != 0;
    let mut len = bytes.len();
    while len > 1 && bytes[len - 1] == fill && (bytes[len - 2] & 0x80 != 0) == negative {
        len -= 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::{Cursor, Long};

    #[test]
    fn reads_stop_at_the_end_of_the_input() {
        let mut c = Cursor::new(&[3, 1, 2, 3, 9]);
        assert_eq!(c.sized(1), Some(&[1, 2, 3][..]));
        assert_eq!(c.u16(), None, "one byte left");
        assert_eq!(c.pos(), 4, "a failed read moves nothing");
        assert_eq!(c.u8(), Some(9));
        assert!(c.is_done());
        assert_eq!(c.u8(), None);
        // A declared length past the input is refused before any slice is made.
        assert_eq!(Cursor::new(&[0xff, 0xff, 0xff, 0x7f, 0]).sized(4), None);
        assert_eq!(Cursor::new(&[0xff; 9]).sized(8), None);
    }

    #[test]
    fn longs_decode_as_python_writes_them() {
        assert_eq!(Long::from_le(&[]), Long::Small(0));
        assert_eq!(Long::from_le(&[0xff]), Long::Small(-1));
        assert_eq!(Long::from_le(&[0x80, 0x00]), Long::Small(128));
        assert_eq!(Long::from_le(&[0, 0, 0xff, 0xff]), Long::Small(-65536));
        let max = u64::MAX.to_le_bytes();
        let u64_max = [&max[..], &[0]].concat();
        assert_eq!(Long::from_le(&u64_max).to_u64(), Some(u64::MAX));
        assert_eq!(Long::from_le(&u64_max).to_i128(), Some(u64::MAX.into()));
        // Redundant sign bytes are dropped.
        let padded = [&max[..], &[0, 0, 0]].concat();
        assert_eq!(Long::from_le(&padded), Long::Big(&u64_max));
        let minus = [&[0; 8][..], &[0xff]].concat();
        assert_eq!(Long::from_le(&minus).to_i128(), Some(-(1i128 << 64)));
        assert_eq!(Long::from_le(&minus).to_u64(), None);
        assert_eq!(Long::from_le(&[1; 17]).to_i128(), None);
        assert_eq!(
            Long::from_le(&i64::MIN.to_le_bytes()),
            Long::Small(i64::MIN)
        );
    }
}
