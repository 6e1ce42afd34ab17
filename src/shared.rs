//! `Value` and `Array`: numbers in shared memory, guarded by a lock that works across
//! processes (CPython's `multiprocessing.Value` / `Array`), and `RawValue` / `RawArray`
//! without one (CPython's `multiprocessing.RawValue` / `RawArray`).
//!
//! # Layout and lock
//! A region is a memfd mapped `MAP_SHARED` in every process holding it (it travels as a
//! descriptor, like a pipe end, so it passes to children under every start method). Its first
//! 48 bytes are a header: the lock's 40-byte block (`sys::RobustLock`: its futex word holds
//! the owning thread's id, and its list links let the kernel mark it when the owner dies),
//! the element count (u32), the element's type code and size; the elements follow, 8-byte
//! aligned.
//!
//! The built-in lock is a [`Lock`] whose block is the header's (no second memfd); a
//! `Value::with_lock` / `Array::with_lock` uses the caller's `Lock` instead, which can then
//! guard several values at once (CPython's `Value('i', 0, lock=lock)`). Either way the lock
//! survives its owner's death: the kernel marks it and wakes a waiter, which takes it over, and
//! the guard reports it with [`ValueGuard::owner_died`]: the data may be half-updated, as
//! with a robust pthread mutex's `EOWNERDEAD`. See [`Lock`] for the details.
//!
//! # Without a lock
//! [`RawValue`] and [`RawArray`] (CPython's `lock=False`) read and write each element with
//! one atomic load or store (acquire / release), so a read never sees a torn number, but a
//! read-modify-write from two processes can lose updates: that is what the lock is for.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::sync::{Lock, LockGuard};
use crate::sys::{self, SharedMapping, LOCK_SIZE};
use crate::Error;

const LOCK: usize = 0;
const COUNT: usize = LOCK_SIZE;
const TYPECODE: usize = COUNT + 4;
const ELEMENT_SIZE: usize = TYPECODE + 1;
const DATA: usize = COUNT + 8;

mod sealed {
    pub trait Sealed {
        /// The element's bits in the low end of a `u64` (for atomic access).
        fn to_bits(self) -> u64;
        /// The inverse of `to_bits`, from the low `size_of::<Self>()` bytes.
        fn from_bits(bits: u64) -> Self;
    }
}

/// The plain numbers a [`Value`] or [`Array`] holds, with CPython's `array` type codes.
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

/// A region of shared memory holding `count` elements of `T` after the header.
struct Region<T> {
    map: Arc<SharedMapping>,
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
            map: Arc::new(map),
            count: values.len(),
            _t: PhantomData,
        };
        for (i, v) in values.iter().enumerate() {
            region.store(i, *v);
        }
        Ok(region)
    }

    /// `len` zeros: a fresh memfd is zero-filled by the kernel, so nothing is written.
    fn zeroed(len: usize) -> Result<Region<T>, Error> {
        let count =
            u32::try_from(len).map_err(|_| Error::InvalidArgument("too many elements".into()))?;
        let size = DATA + len * std::mem::size_of::<T>();
        let map = SharedMapping::new(size).map_err(Error::os("memfd"))?;
        map.write(COUNT, count);
        map.write(TYPECODE, T::TYPECODE);
        map.write(ELEMENT_SIZE, std::mem::size_of::<T>() as u8);
        Ok(Region {
            map: Arc::new(map),
            count: len,
            _t: PhantomData,
        })
    }

    /// A region received from another process, checked against `T`.
    fn from_map(map: SharedMapping) -> Result<Region<T>, String> {
        let (code, size) = (map.read::<u8>(TYPECODE), map.read::<u8>(ELEMENT_SIZE));
        if code != T::TYPECODE || usize::from(size) != std::mem::size_of::<T>() {
            return Err(format!(
                "shared memory holds elements of type code {:?}, not {:?}",
                code as char,
                T::TYPECODE as char
            ));
        }
        let count = map.read::<u32>(COUNT) as usize;
        let needed = DATA + count * std::mem::size_of::<T>();
        if needed > map.len() {
            return Err(sys::refuse(sys::Refusal::TooSmall {
                len: map.len() as u64,
                needed: needed as u64,
            })
            .to_string());
        }
        Ok(Region {
            map: Arc::new(map),
            count,
            _t: PhantomData,
        })
    }

    fn offset(&self, i: usize) -> usize {
        DATA + i * std::mem::size_of::<T>()
    }

    /// The region's built-in lock.
    fn builtin_lock(&self) -> Lock {
        Lock::embedded(Arc::clone(&self.map), LOCK)
    }

    /// Element `i`, one atomic load (every access is atomic: a lock-free reader may run at
    /// the same time as a locked writer).
    fn load(&self, i: usize) -> T {
        T::from_bits(self.map.load_bits(self.offset(i), std::mem::size_of::<T>()))
    }

    fn store(&self, i: usize, v: T) {
        self.map
            .store_bits(self.offset(i), std::mem::size_of::<T>(), v.to_bits());
    }

    fn get(&self, i: usize) -> Option<T> {
        (i < self.count).then(|| self.load(i))
    }

    fn set(&self, i: usize, value: T) -> Result<(), Error> {
        if i >= self.count {
            return Err(Error::InvalidArgument(format!(
                "index {i} out of range for an array of {}",
                self.count
            )));
        }
        self.store(i, value);
        Ok(())
    }

    fn to_vec(&self) -> Vec<T> {
        (0..self.count).map(|i| self.load(i)).collect()
    }

    fn get_slice(&self, range: impl RangeBounds<usize>) -> Option<Vec<T>> {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1)?,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.count,
        };
        (start <= end && end <= self.count).then(|| (start..end).map(|i| self.load(i)).collect())
    }

    fn set_slice(&self, start: usize, values: &[T]) -> Result<(), Error> {
        if start
            .checked_add(values.len())
            .is_none_or(|end| end > self.count)
        {
            return Err(Error::InvalidArgument(format!(
                "{} elements from index {start} do not fit an array of {}",
                values.len(),
                self.count
            )));
        }
        for (i, v) in values.iter().enumerate() {
            self.store(start + i, *v);
        }
        Ok(())
    }

    fn count(&self) -> usize {
        self.count
    }

    fn share(&self) -> Region<T> {
        Region {
            map: Arc::clone(&self.map),
            count: self.count,
            _t: PhantomData,
        }
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

impl<T> fmt::Debug for Region<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("count", &self.count)
            .finish()
    }
}

/// Checks that a region received as a `Value` or `RawValue` holds one element (an `Array`
/// sent where a value is expected is refused, not misread).
fn one_element<E: serde::de::Error>(count: usize, what: &str) -> Result<(), E> {
    if count == 1 {
        Ok(())
    } else {
        Err(E::custom(format!(
            "shared memory holds {count} elements, not the one of a {what}"
        )))
    }
}

/// A region and the lock that guards it: what `Value` and `Array` are.
struct Locked<T> {
    region: Region<T>,
    lock: Lock,
}

impl<T: Element> Locked<T> {
    fn count(&self) -> usize {
        self.region.count
    }

    fn builtin(region: Region<T>) -> Locked<T> {
        let lock = region.builtin_lock();
        Locked { region, lock }
    }

    fn try_clone(&self) -> Result<Locked<T>, Error> {
        Ok(Locked {
            region: self.region.share(),
            lock: self.lock.try_clone()?,
        })
    }
}

impl<T> Serialize for Locked<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The built-in lock travels with the region; only a caller's lock goes separately.
        let own = (!self.lock.is_embedded_in(&self.region.map, LOCK)).then_some(&self.lock);
        (&self.region, own).serialize(serializer)
    }
}

impl<'de, T: Element> Deserialize<'de> for Locked<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (region, lock) = <(Region<T>, Option<Lock>)>::deserialize(deserializer)?;
        Ok(match lock {
            Some(lock) => Locked { region, lock },
            None => Locked::builtin(region),
        })
    }
}

/// One number in shared memory with a lock (CPython's `multiprocessing.Value('i', 0)`).
///
/// Pass it to children (it travels as a handle); every copy sees the same number.
/// [`get`](Self::get) and [`set`](Self::set) take the lock for one access; hold
/// [`lock`](Self::lock) across a read-modify-write (`with v.get_lock(): v.value += 1`).
/// The lock is built in, or the caller's ([`with_lock`](Self::with_lock)); for no lock at
/// all, use [`RawValue`].
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
#[derive(Serialize)]
pub struct Value<T>(Locked<T>);

impl<'de, T: Element> Deserialize<'de> for Value<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = <Locked<T>>::deserialize(deserializer)?;
        one_element(inner.count(), "Value")?;
        Ok(Value(inner))
    }
}

impl<T: Element> Value<T> {
    /// A new shared number with a lock of its own.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new(value: T) -> Result<Value<T>, Error> {
        Region::new(&[value]).map(|r| Value(Locked::builtin(r)))
    }

    /// A new shared number guarded by `lock` (CPython's `Value('i', 0, lock=lock)`): one
    /// lock can guard several values.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Lock, Value};
    ///
    /// let lock = Lock::new().unwrap();
    /// let (a, b) = (
    ///     Value::with_lock(1u8, lock.try_clone().unwrap()).unwrap(),
    ///     Value::with_lock(2u8, lock.try_clone().unwrap()).unwrap(),
    /// );
    /// let guard = a.lock();
    /// assert!(b.try_lock().is_none()); // the same lock
    /// drop(guard);
    /// ```
    pub fn with_lock(value: T, lock: Lock) -> Result<Value<T>, Error> {
        let region = Region::new(&[value])?;
        Ok(Value(Locked { region, lock }))
    }

    /// The number (taking the lock for the read).
    pub fn get(&self) -> T {
        self.lock().get()
    }

    /// Sets the number (taking the lock for the write).
    pub fn set(&self, value: T) {
        self.lock().set(value);
    }

    /// Takes the lock, waiting as long as it takes (`with v.get_lock():`). A lock whose owner
    /// died holding it is taken over ([`ValueGuard::owner_died`]).
    pub fn lock(&self) -> ValueGuard<'_, T> {
        self.guard(self.0.lock.acquire())
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Option<ValueGuard<'_, T>> {
        self.0.lock.try_acquire().map(|g| self.guard(g))
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<ValueGuard<'_, T>> {
        self.0.lock.acquire_timeout(timeout).map(|g| self.guard(g))
    }

    fn guard<'a>(&'a self, guard: LockGuard<'a>) -> ValueGuard<'a, T> {
        ValueGuard {
            region: &self.0.region,
            guard,
        }
    }

    /// The lock that guards the number (CPython's `get_lock()`): the built-in one or the one
    /// given to [`with_lock`](Self::with_lock).
    pub fn get_lock(&self) -> &Lock {
        &self.0.lock
    }

    /// Another handle on the same number.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<Value<T>, Error> {
        self.0.try_clone().map(Value)
    }
}

impl<T: Element> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Value")
            .field("typecode", &(T::TYPECODE as char))
            .field("fd", &self.0.region.map.fd())
            .finish()
    }
}

/// The lock of a [`Value`], held: read and write the number; released on drop.
#[derive(Debug)]
pub struct ValueGuard<'a, T: Element> {
    region: &'a Region<T>,
    guard: LockGuard<'a>,
}

impl<T: Element> ValueGuard<'_, T> {
    /// The number.
    pub fn get(&self) -> T {
        self.region.load(0)
    }

    /// Sets the number.
    pub fn set(&mut self, value: T) {
        self.region.store(0, value);
    }

    /// Whether the previous owner died holding the lock (the number may be half-updated).
    pub fn owner_died(&self) -> bool {
        self.guard.owner_died()
    }
}

/// A fixed-length array of numbers in shared memory with a lock (CPython's
/// `multiprocessing.Array('d', n)`). For no lock at all, use [`RawArray`].
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
pub struct Array<T>(Locked<T>);

impl<T: Element> Array<T> {
    /// A shared array holding `values`, with a lock of its own.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made; [`Error::InvalidArgument`] beyond
    /// 2³² − 1 elements.
    pub fn new(values: &[T]) -> Result<Array<T>, Error> {
        Region::new(values).map(|r| Array(Locked::builtin(r)))
    }

    /// A shared array of `len` zeros (CPython's `Array('d', n)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn zeroed(len: usize) -> Result<Array<T>, Error> {
        Region::zeroed(len).map(|r| Array(Locked::builtin(r)))
    }

    /// A shared array holding `values`, guarded by `lock` (CPython's `Array('i', v,
    /// lock=lock)`).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_lock(values: &[T], lock: Lock) -> Result<Array<T>, Error> {
        let region = Region::new(values)?;
        Ok(Array(Locked { region, lock }))
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.region.count
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.region.count == 0
    }

    /// A copy of the elements (taking the lock for the read).
    pub fn to_vec(&self) -> Vec<T> {
        self.lock().to_vec()
    }

    /// Takes the lock, waiting as long as it takes; see [`Value::lock`].
    pub fn lock(&self) -> ArrayGuard<'_, T> {
        self.guard(self.0.lock.acquire())
    }

    /// Takes the lock if it is free now.
    pub fn try_lock(&self) -> Option<ArrayGuard<'_, T>> {
        self.0.lock.try_acquire().map(|g| self.guard(g))
    }

    /// Takes the lock, waiting at most `timeout`.
    pub fn lock_timeout(&self, timeout: Duration) -> Option<ArrayGuard<'_, T>> {
        self.0.lock.acquire_timeout(timeout).map(|g| self.guard(g))
    }

    fn guard<'a>(&'a self, guard: LockGuard<'a>) -> ArrayGuard<'a, T> {
        ArrayGuard {
            region: &self.0.region,
            guard,
        }
    }

    /// The lock that guards the array (CPython's `get_lock()`).
    pub fn get_lock(&self) -> &Lock {
        &self.0.lock
    }

    /// Another handle on the same array.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<Array<T>, Error> {
        self.0.try_clone().map(Array)
    }
}

impl<T: Element> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("typecode", &(T::TYPECODE as char))
            .field("len", &self.0.region.count)
            .finish()
    }
}

/// The lock of an [`Array`], held: read and write its elements; released on drop.
#[derive(Debug)]
pub struct ArrayGuard<'a, T: Element> {
    region: &'a Region<T>,
    guard: LockGuard<'a>,
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
        self.region.get(i)
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end (nothing is written).
    pub fn set(&mut self, i: usize, value: T) -> Result<(), Error> {
        self.region.set(i, value)
    }

    /// A copy of the elements in `range` (Python's `a[i:j]`), or `None` if it does not lie
    /// inside the array.
    pub fn get_slice(&self, range: impl RangeBounds<usize>) -> Option<Vec<T>> {
        self.region.get_slice(range)
    }

    /// Writes `values` from index `start` on (Python's `a[i:i + len(v)] = v`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if they do not fit (nothing is written).
    pub fn set_slice(&mut self, start: usize, values: &[T]) -> Result<(), Error> {
        self.region.set_slice(start, values)
    }

    /// A copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.region.to_vec()
    }

    /// Whether the previous owner died holding the lock (see [`ValueGuard::owner_died`]).
    pub fn owner_died(&self) -> bool {
        self.guard.owner_died()
    }
}

/// One number in shared memory without a lock (CPython's `multiprocessing.RawValue`, or
/// `Value(..., lock=False)`).
///
/// Each [`get`](Self::get) and [`set`](Self::set) is one atomic load or store, so no read sees
/// a torn number; but `v.set(v.get() + 1)` from two processes can lose updates. Use
/// [`Value`] for that.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, RawValue};
///
/// fn publish(v: RawValue<f64>) {
///     v.set(2.0 / 3.0);
/// }
///
/// let v = RawValue::new(1.0 / 3.0).unwrap();
/// Process::spawn(publish, v.try_clone().unwrap()).unwrap().join().unwrap();
/// assert_eq!(v.get(), 2.0 / 3.0);
/// ```
///
/// It has no lock to take (CPython's `lock=False` object has no `get_lock`):
///
/// ```compile_fail
/// let v = multiproc::RawValue::new(1i32).unwrap();
/// let _guard = v.lock();
/// ```
#[derive(Serialize)]
pub struct RawValue<T>(Region<T>);

impl<'de, T: Element> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let inner = <Region<T>>::deserialize(deserializer)?;
        one_element(inner.count(), "RawValue")?;
        Ok(RawValue(inner))
    }
}

impl<T: Element> RawValue<T> {
    /// A new shared number.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made.
    pub fn new(value: T) -> Result<RawValue<T>, Error> {
        Region::new(&[value]).map(RawValue)
    }

    /// The number (one atomic load).
    pub fn get(&self) -> T {
        self.0.load(0)
    }

    /// Sets the number (one atomic store).
    pub fn set(&self, value: T) {
        self.0.store(0, value);
    }

    /// Another handle on the same number.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<RawValue<T>, Error> {
        Ok(RawValue(self.0.share()))
    }
}

impl<T: Element> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawValue")
            .field("typecode", &(T::TYPECODE as char))
            .field("value", &self.get())
            .finish()
    }
}

/// A fixed-length array of numbers in shared memory without a lock (CPython's
/// `multiprocessing.RawArray`, or `Array(..., lock=False)`); each element access is atomic, as
/// for [`RawValue`], but a slice is read or written element by element.
///
/// # Examples
///
/// ```
/// use multiproc::{Process, RawArray};
///
/// fn prefix_sums(a: RawArray<i32>) {
///     for i in 1..a.len() {
///         a.set(i, a.get(i).unwrap() + a.get(i - 1).unwrap()).unwrap();
///     }
/// }
///
/// let a = RawArray::new(&[1, 1, 1, 1]).unwrap();
/// Process::spawn(prefix_sums, a.try_clone().unwrap()).unwrap().join().unwrap();
/// assert_eq!(a.to_vec(), [1, 2, 3, 4]);
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "T: Element"))]
pub struct RawArray<T>(Region<T>);

impl<T: Element> RawArray<T> {
    /// A shared array holding `values`.
    ///
    /// # Errors
    /// [`Error::Os`] if the shared memory cannot be made; [`Error::InvalidArgument`] beyond
    /// 2³² − 1 elements.
    pub fn new(values: &[T]) -> Result<RawArray<T>, Error> {
        Region::new(values).map(RawArray)
    }

    /// A shared array of `len` zeros.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn zeroed(len: usize) -> Result<RawArray<T>, Error> {
        Region::zeroed(len).map(RawArray)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.count
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.0.get(i)
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] past the end (nothing is written).
    pub fn set(&self, i: usize, value: T) -> Result<(), Error> {
        self.0.set(i, value)
    }

    /// A copy of the elements in `range`, or `None` if it does not lie inside the array.
    pub fn get_slice(&self, range: impl RangeBounds<usize>) -> Option<Vec<T>> {
        self.0.get_slice(range)
    }

    /// Writes `values` from index `start` on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if they do not fit (nothing is written).
    pub fn set_slice(&self, start: usize, values: &[T]) -> Result<(), Error> {
        self.0.set_slice(start, values)
    }

    /// A copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.0.to_vec()
    }

    /// Another handle on the same array.
    ///
    /// # Errors
    /// None today (the handle shares this process's mapping); kept fallible like the other
    /// handles' `try_clone`.
    pub fn try_clone(&self) -> Result<RawArray<T>, Error> {
        Ok(RawArray(self.0.share()))
    }
}

impl<T: Element> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawArray")
            .field("typecode", &(T::TYPECODE as char))
            .field("len", &self.0.count)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;
    use crate::codec::{decode_in, encode_in, FdTable, Handle};

    /// A memfd of `len` bytes holding a valid one-`i32` header, sealed with `seals`.
    fn handmade_region(len: usize, count: u32, seals: libc::c_int) -> OwnedFd {
        // SAFETY: memfd_create with a valid C string; the descriptor is owned below.
        let raw = unsafe { libc::memfd_create(c"handmade".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(raw >= 0);
        // SAFETY: `raw` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut bytes = vec![0u8; len];
        if len >= DATA {
            bytes[COUNT..COUNT + 4].copy_from_slice(&count.to_ne_bytes());
            bytes[TYPECODE] = b'i';
            bytes[ELEMENT_SIZE] = 4;
        }
        nix::unistd::write(&fd, &bytes).unwrap();
        if seals != 0 {
            // SAFETY: F_ADD_SEALS on the memfd owned here.
            let added = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
            assert_eq!(added, 0);
        }
        fd
    }

    /// Sends `fd` as a region where a `T` is expected, as a peer process would.
    fn receive_as<T: serde::de::DeserializeOwned>(fd: OwnedFd) -> Result<T, Error> {
        let mut fds = Vec::new();
        let bytes = encode_in(&(Handle(fd), None::<()>), &mut fds).unwrap();
        decode_in(&bytes, &mut FdTable::new(fds))
    }

    /// A region whose memfd a peer could shrink is refused before it is mapped (issue 12).
    #[test]
    fn unsealed_region_is_refused() {
        let fd = handmade_region(DATA + 4, 1, 0);
        let err = receive_as::<Value<i32>>(fd).unwrap_err();
        assert!(
            matches!(err, Error::UnsealedSharedMemory { seals: 0 }),
            "{err}"
        );
        // Sealed against shrinking only: still refused (it could grow, or get more seals).
        let fd = handmade_region(DATA + 4, 1, libc::F_SEAL_SHRINK);
        let err = receive_as::<Value<i32>>(fd).unwrap_err();
        assert!(
            matches!(err, Error::UnsealedSharedMemory { seals } if seals == libc::F_SEAL_SHRINK as u32),
            "{err}"
        );
        // The same bytes, sealed as the crate seals them, are accepted.
        let fd = handmade_region(DATA + 4, 1, sys::shm_seals());
        assert_eq!(receive_as::<Value<i32>>(fd).unwrap().get(), 0);
    }

    /// A sealed region too small for its header, or for the elements its header counts, is
    /// refused with the sizes.
    #[test]
    fn too_small_region_is_refused() {
        let fd = handmade_region(8, 1, sys::shm_seals());
        let err = receive_as::<Value<i32>>(fd).unwrap_err();
        assert!(
            matches!(err, Error::SharedMemoryTooSmall { len: 8, needed } if needed == DATA as u64),
            "{err}"
        );
        let fd = handmade_region(DATA + 4, 1000, sys::shm_seals());
        let err = receive_as::<Value<i32>>(fd).unwrap_err();
        assert!(
            matches!(err, Error::SharedMemoryTooSmall { needed, .. } if needed == (DATA + 4000) as u64),
            "{err}"
        );
    }

    /// The crate's own regions cannot be resized by anyone.
    #[test]
    fn own_region_cannot_be_resized() {
        let v = Value::new(5i64).unwrap();
        let fd = v.0.region.map.fd();
        assert!(nix::unistd::ftruncate(fd, 0).is_err());
        assert!(nix::unistd::ftruncate(fd, 1 << 20).is_err());
        assert_eq!(v.get(), 5);
    }
}
