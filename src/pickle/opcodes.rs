//! Every pickle opcode the crate reads or writes, by its name in CPython's `pickletools`.
//!
//! The readers (`pickle::decode`, `pickle::fast`, `codec::stream`, `pool::fast_decode`,
//! `managers::wire`) and the writer (`pickle::encode`) name opcodes only through this table.
//! Opcodes missing here (protocol 0/1 text forms, persistent ids, extension codes, out-of-band
//! buffers) are read by none of them and refused as unsupported.

// Protocol and framing.
/// `PROTO n`: the protocol version (one byte).
pub(crate) const PROTO: u8 = 0x80;
/// `FRAME n`: a protocol 4 frame of `n` bytes (eight-byte length; advisory).
pub(crate) const FRAME: u8 = 0x95;
/// The end of the pickle: the top of the stack is the value.
pub(crate) const STOP: u8 = b'.';

// Stack manipulation.
/// Pushes a mark.
pub(crate) const MARK: u8 = b'(';
/// Discards the top of the stack.
pub(crate) const POP: u8 = b'0';
/// Discards the stack down to the last mark, and the mark.
pub(crate) const POP_MARK: u8 = b'1';
/// Pushes the top of the stack again.
pub(crate) const DUP: u8 = b'2';

// Scalars.
/// `None`.
pub(crate) const NONE: u8 = b'N';
/// `True`.
pub(crate) const NEWTRUE: u8 = 0x88;
/// `False`.
pub(crate) const NEWFALSE: u8 = 0x89;
/// A four-byte signed little-endian int.
pub(crate) const BININT: u8 = b'J';
/// A one-byte unsigned int.
pub(crate) const BININT1: u8 = b'K';
/// A two-byte unsigned little-endian int.
pub(crate) const BININT2: u8 = b'M';
/// An int as little-endian two's complement, its length in one byte.
pub(crate) const LONG1: u8 = 0x8a;
/// An int as little-endian two's complement, its length in four bytes (signed).
pub(crate) const LONG4: u8 = 0x8b;
/// A float, eight bytes big-endian.
pub(crate) const BINFLOAT: u8 = b'G';

// Strings and bytes.
/// A UTF-8 `str`, its length in one byte.
pub(crate) const SHORT_BINUNICODE: u8 = 0x8c;
/// A UTF-8 `str`, its length in four bytes.
pub(crate) const BINUNICODE: u8 = b'X';
/// A UTF-8 `str`, its length in eight bytes.
pub(crate) const BINUNICODE8: u8 = 0x8d;
/// `bytes`, the length in one byte.
pub(crate) const SHORT_BINBYTES: u8 = b'C';
/// `bytes`, the length in four bytes.
pub(crate) const BINBYTES: u8 = b'B';
/// `bytes`, the length in eight bytes.
pub(crate) const BINBYTES8: u8 = 0x8e;
/// A `bytearray`, the length in eight bytes (protocol 5).
pub(crate) const BYTEARRAY8: u8 = 0x96;

// Containers.
/// `()`.
pub(crate) const EMPTY_TUPLE: u8 = b')';
/// A 1-tuple of the top of the stack; `TUPLE2` and `TUPLE3` follow it.
pub(crate) const TUPLE1: u8 = 0x85;
/// A 2-tuple of the top two items.
pub(crate) const TUPLE2: u8 = 0x86;
/// A 3-tuple of the top three items.
pub(crate) const TUPLE3: u8 = 0x87;
/// A tuple of the items above the last mark.
pub(crate) const TUPLE: u8 = b't';
/// A frozenset of the items above the last mark.
pub(crate) const FROZENSET: u8 = 0x91;
/// `[]`.
pub(crate) const EMPTY_LIST: u8 = b']';
/// `{}`.
pub(crate) const EMPTY_DICT: u8 = b'}';
/// An empty set.
pub(crate) const EMPTY_SET: u8 = 0x8f;
/// Appends the top of the stack to the list below it.
pub(crate) const APPEND: u8 = b'a';
/// Appends the items above the last mark to the list below it.
pub(crate) const APPENDS: u8 = b'e';
/// Sets one key and value in the dict below them.
pub(crate) const SETITEM: u8 = b's';
/// Sets the keys and values above the last mark in the dict below it.
pub(crate) const SETITEMS: u8 = b'u';
/// Adds the items above the last mark to the set below it.
pub(crate) const ADDITEMS: u8 = 0x90;

// Memo.
/// Memoizes the top of the stack at the next index.
pub(crate) const MEMOIZE: u8 = 0x94;
/// Memoizes the top of the stack at a one-byte index.
pub(crate) const BINPUT: u8 = b'q';
/// Memoizes the top of the stack at a four-byte index.
pub(crate) const LONG_BINPUT: u8 = b'r';
/// Pushes the memo entry at a one-byte index.
pub(crate) const BINGET: u8 = b'h';
/// Pushes the memo entry at a four-byte index.
pub(crate) const LONG_BINGET: u8 = b'j';

// Objects (read as data, never called).
/// A global named by two lines, `module\nname\n`.
pub(crate) const GLOBAL: u8 = b'c';
/// A global named by the two `str` on top of the stack.
pub(crate) const STACK_GLOBAL: u8 = 0x93;
/// `callable(*args)`.
pub(crate) const REDUCE: u8 = b'R';
/// `cls.__new__(cls, *args)`.
pub(crate) const NEWOBJ: u8 = 0x81;
/// `cls.__new__(cls, *args, **kwargs)`.
pub(crate) const NEWOBJ_EX: u8 = 0x92;
/// Sets an object's state.
pub(crate) const BUILD: u8 = b'b';
