//! [`Value`] (one number with a lock, its guard [`ValueGuard`]) and [`RawValue`] (one number
//! without a lock).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use super::element::Element;
use super::locked::{lock_api, Held, Locked};
use super::region::Region;
use crate::sync::Lock;
use crate::Error;

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
pub struct Value<T>(pub(super) Locked<T>);

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
pub struct ValueGuard<'a, T: Element>(Held<'a, T>);

impl<T: Element> ValueGuard<'_, T> {
    /// The number.
    pub fn get(&self) -> T {
        self.0.region.load(0)
    }

    /// Sets the number.
    pub fn set(&mut self, value: T) {
        self.0.region.store(0, value);
    }
}

lock_api!(Value, ValueGuard, "number");

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
