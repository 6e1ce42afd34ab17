//! `Value` and `Array`: numbers in shared memory, guarded by a lock that works across
//! processes (CPython's `multiprocessing.Value` / `Array`).
//!
//! # Layout and lock
//! A region is a memfd mapped `MAP_SHARED` in every process holding it (it travels as a
//! descriptor, like a pipe end, so it passes to children under every start method). Its first
//! 16 bytes are a header: the lock word (0 when free, else the id of the owning thread), a
//! count of waiters, the element count (u32), the element's type code and size; the elements
//! follow, 8-byte aligned.
//!
//! Taking the lock is one compare-and-swap when it is free; otherwise the taker sleeps on the
//! word with a futex, waking at least every 100 ms. A process that dies holding the lock would
//! leave everyone waiting for ever with a plain futex lock; here a waiter that finds the owner
//! thread gone (no `/proc/<tid>`, or a zombie) takes the lock over, and the guard reports it
//! with [`ValueGuard::owner_died`]: the data may be half-updated, as with a robust pthread
//! mutex's `EOWNERDEAD`. Thread ids can be reused by the system; a reuse within the 100 ms
//! window would delay the takeover, never allow two owners.

use std::fmt;
use std::marker::PhantomData;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::sys::{self, SharedMapping};
use crate::Error;

const LOCK: usize = 0;
const WAITERS: usize = 4;
const COUNT: usize = 8;
const TYPECODE: usize = 12;
const ELEMENT_SIZE: usize = 13;
const DATA: usize = 16;

mod sealed {
    pub trait Sealed {}
}

/// The plain numbers a [`Value`] or [`Array`] holds, with CPython's `array` type codes.
pub trait Element: sealed::Sealed + Copy + Default + fmt::Debug + Send + Sync + 'static {
    /// CPython's type code (`'i'`, `'d'`, …).
    const TYPECODE: u8;
}

macro_rules! elements {
    ($($t:ty => $code:literal),* $(,)?) => {
        $(
            impl sealed::Sealed for $t {}
            impl Element for $t {
                const TYPECODE: u8 = $code;
            }
        )*
    };
}

elements! {
    i8 => b'b', u8 => b'B', i16 => b'h', u16 => b'H', i32 => b'i', u32 => b'I',
    i64 => b'q', u64 => b'Q', f32 => b'f', f64 => b'd',
}

/// A region of shared memory holding `count` elements of `T` behind the lock.
struct Region<T> {
    map: SharedMapping,
    count: usize,
    _t: PhantomData<T>,
}

impl<T: Element> Region<T> {
    fn new(values: &[T]) -> Result<Region<T>, Error> {
        let count = u32::try_from(values.len())
            .map_err(|_| Error::InvalidArgument("too many elements".into()))?;
        let size = DATA + std::mem::size_of_val(values);
        let map = SharedMapping::new(size).map_err(Error::os("memfd"))?;
        map.write(COUNT, count);
        map.write(TYPECODE, T::TYPECODE);
        map.write(ELEMENT_SIZE, std::mem::size_of::<T>() as u8);
        let region = Region {
            map,
            count: values.len(),
            _t: PhantomData,
        };
        for (i, v) in values.iter().enumerate() {
            region.map.write(region.offset(i), *v);
        }
        Ok(region)
    }

    /// A region received from another process, checked against `T`.
    fn from_map(map: SharedMapping) -> Result<Region<T>, String> {
        let (code, size) = (map.read::<u8>(TYPECODE), map.read::<u8>(ELEMENT_SIZE));
        if code != T::TYPECODE || usize::from(size) != std::mem::size_of::<T>() {
            return Err(format!(
                "shared memory holds type code '{}', not '{}'",
                code as char,
                T::TYPECODE as char
            ));
        }
        let count = map.read::<u32>(COUNT) as usize;
        if DATA + count * std::mem::size_of::<T>() > map.len() {
            return Err("shared memory is shorter than its element count".into());
        }
        Ok(Region {
            map,
            count,
            _t: PhantomData,
        })
    }

    fn offset(&self, i: usize) -> usize {
        DATA + i * std::mem::size_of::<T>()
    }

    fn raw_lock(&self) -> sys::RobustLock<'_> {
        sys::RobustLock::new(self.map.atomic_u32(LOCK), self.map.atomic_u32(WAITERS))
    }

    /// Takes the lock; `true` if it was taken over from an owner that died holding it.
    fn lock(&self) -> bool {
        self.raw_lock().lock_until(None) == Some(sys::Acquired::OwnerDied)
    }

    fn unlock(&self) {
        self.raw_lock().unlock();
    }

    fn get(&self, i: usize) -> T {
        self.map.read(self.offset(i))
    }

    fn set(&self, i: usize, v: T) {
        self.map.write(self.offset(i), v);
    }

    fn try_clone(&self) -> Result<Region<T>, Error> {
        let fd = self
            .map
            .fd()
            .try_clone_to_owned()
            .map_err(Error::os("dup"))?;
        let map = SharedMapping::from_fd(fd, DATA).map_err(Error::os("mmap"))?;
        Ok(Region {
            map,
            count: self.count,
            _t: PhantomData,
        })
    }
}

impl<T> Serialize for Region<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        codec::serialize_fd(self.map.fd(), serializer)
    }
}

impl<'de, T: Element> Deserialize<'de> for Region<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fd = codec::deserialize_fd(deserializer)?;
        let map = SharedMapping::from_fd(fd, DATA).map_err(D::Error::custom)?;
        Region::from_map(map).map_err(D::Error::custom)
    }
}

/// One number in shared memory with a lock (CPython's `multiprocessing.Value('i', 0)`).
///
/// Pass it to children (it travels as a handle); every copy sees the same number.
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one access; hold
/// [`lock`](Self::lock) across a read-modify-write (`with v.get_lock(): v.value += 1`).
///
/// # Examples
///
/// ```
/// use multiproc::{Process, Value};
///
/// fn add_ten(v: Value<i64>) {
///     for _ in 0..10 {
///         let mut n = v.lock();
///         n.set(n.get() + 1);
///     }
/// }
///
/// let v = Value::new(0i64).unwrap();
/// let mut child = Process::spawn(add_ten, v.try_clone().unwrap()).unwrap();
/// add_ten(v.try_clone().unwrap());
/// child.join().unwrap();
/// assert_eq!(v.get(), 20);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Element"))]
pub struct Value<T>(Region<T>);

impl<T: Element> Value<T> {
    /// A new shared number.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new(value: T) -> Result<Value<T>, Error> {
        Region::new(&[value]).map(Value)
    }

    /// The number (taking the lock for the read).
    pub fn get(&self) -> T {
        self.lock().get()
    }

    /// Sets the number (taking the lock for the write).
    pub fn set(&self, value: T) {
        self.lock().set(value);
    }

    /// Takes the lock, waiting as long as it takes (CPython's `get_lock()`). A lock whose
    /// owner died holding it is taken over ([`ValueGuard::owner_died`]).
    pub fn lock(&self) -> ValueGuard<'_, T> {
        let owner_died = self.0.lock();
        ValueGuard {
            region: &self.0,
            owner_died,
        }
    }

    /// Another handle on the same number.
    ///
    /// # Errors
    /// [`Error::Os`] if the descriptor cannot be duplicated or mapped.
    pub fn try_clone(&self) -> Result<Value<T>, Error> {
        self.0.try_clone().map(Value)
    }
}

impl<T: Element> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("typecode", &(T::TYPECODE as char))
            .field("fd", &self.0.map.fd())
            .finish()
    }
}

/// The lock of a [`Value`], held: read and write the number; released on drop.
#[derive(Debug)]
pub struct ValueGuard<'a, T: Element> {
    region: &'a Region<T>,
    owner_died: bool,
}

impl<T: Element> ValueGuard<'_, T> {
    /// The number.
    pub fn get(&self) -> T {
        self.region.get(0)
    }

    /// Sets the number.
    pub fn set(&mut self, value: T) {
        self.region.set(0, value);
    }

    /// Whether the previous owner died holding the lock (the number may be half-updated).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: Element> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.region.unlock();
    }
}

/// A fixed-length array of numbers in shared memory with a lock (CPython's
/// `multiprocessing.Array('d', n)`).
///
/// # Examples
///
/// ```
/// use multiproc::{Array, Process};
///
/// fn negate(a: Array<f64>) {
///     let mut guard = a.lock();
///     for i in 0..guard.len() {
///         let x = guard.get(i).unwrap();
///         guard.set(i, -x).unwrap();
///     }
/// }
///
/// let a = Array::new(&[1.0, 2.5, -3.0]).unwrap();
/// Process::spawn(negate, a.try_clone().unwrap()).unwrap().join().unwrap();
/// assert_eq!(a.to_vec(), [-1.0, -2.5, 3.0]);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Element"))]
pub struct Array<T>(Region<T>);

impl<T: Element> Array<T> {
    /// A shared array holding `values`.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made; [`Error::InvalidArgument`] beyond
    /// 2³² − 1 elements.
    pub fn new(values: &[T]) -> Result<Array<T>, Error> {
        Region::new(values).map(Array)
    }

    /// A shared array of `len` zeros (CPython's `Array('d', n)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn zeroed(len: usize) -> Result<Array<T>, Error> {
        Region::new(&vec![T::default(); len]).map(Array)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.count
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// A copy of the elements (taking the lock for the read).
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().to_vec()
    }

    /// Takes the lock, waiting as long as it takes; see [`Value::lock`].
    pub fn lock(&self) -> ArrayGuard<'_, T> {
        let owner_died = self.0.lock();
        ArrayGuard {
            region: &self.0,
            owner_died,
        }
    }

    /// Another handle on the same array.
    ///
    /// # Errors
    /// [`Error::Os`] if the descriptor cannot be duplicated or mapped.
    pub fn try_clone(&self) -> Result<Array<T>, Error> {
        self.0.try_clone().map(Array)
    }
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("typecode", &(T::TYPECODE as char))
            .field("len", &self.0.count)
            .finish()
    }
}

/// The lock of an [`Array`], held: read and write its elements; released on drop.
#[derive(Debug)]
pub struct ArrayGuard<'a, T: Element> {
    region: &'a Region<T>,
    owner_died: bool,
}

impl<T: Element> ArrayGuard<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.region.count
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.region.count == 0
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        (i < self.region.count).then(|| self.region.get(i))
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end (nothing is written).
    pub fn set(&mut self, i: usize, value: T) -> Result<(), Error> {
        if i >= self.region.count {
            return Err(Error::InvalidArgument(format!(
                "index {i} out of range for an array of {}",
                self.region.count
            )));
        }
        self.region.set(i, value);
        Ok(())
    }

    /// A copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.region.count).map(|i| self.region.get(i)).collect()
    }

    /// Whether the previous owner died holding the lock (see [`ValueGuard::owner_died`]).
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: Element> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.region.unlock();
    }
}

impl<T> fmt::Debug for Region<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("count", &self.count)
            .finish()
    }
}
