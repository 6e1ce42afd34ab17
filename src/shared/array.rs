//! [`Array`] (a fixed-length array of numbers with a lock, its guard [`ArrayGuard`]) and
//! [`RawArray`] (one without a lock).

use std::fmt;
use std::ops::RangeBounds;

use serde::{Deserialize, Serialize};

use super::element::Element;
use super::locked::{lock_api, Held, Locked};
use super::region::Region;
use crate::sync::Lock;
use crate::Error;

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
    /// [`Error::Os`] if the shared memory cannot be made; [`Error::TooManyElements`] beyond
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
pub struct ArrayGuard<'a, T: Element>(Held<'a, T>);

impl<T: Element> ArrayGuard<'_, T> {
    /// The number of elements.
    pub fn len(&self) -> usize {
        self.0.region.count
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.0.region.count == 0
    }

    /// Element `i`, or `None` past the end.
    pub fn get(&self, i: usize) -> Option<T> {
        self.0.region.get(i)
    }

    /// Sets element `i`.
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] past the end (nothing is written).
    pub fn set(&mut self, i: usize, value: T) -> Result<(), Error> {
        self.0.region.set(i, value)
    }

    /// A copy of the elements in `range` (Python's `a[i:j]`), or `None` if it does not lie
    /// inside the array.
    pub fn get_slice(&self, range: impl RangeBounds<usize>) -> Option<Vec<T>> {
        self.0.region.get_slice(range)
    }

    /// Writes `values` from index `start` on (Python's `a[i:i + len(v)] = v`).
    ///
    /// # Errors
    /// [`Error::IndexOutOfRange`] if they do not fit (nothing is written).
    pub fn set_slice(&mut self, start: usize, values: &[T]) -> Result<(), Error> {
        self.0.region.set_slice(start, values)
    }

    /// A copy of the elements.
    pub fn to_vec(&self) -> Vec<T> {
        self.0.region.to_vec()
    }
}

lock_api!(Array, ArrayGuard, "array");

/// A fixed-length array of numbers in shared memory without a lock (CPython's
/// `multiprocessing.RawArray`, or `Array(..., lock=False)`); each element access is atomic, as
/// for [`RawValue`](super::RawValue), but a slice is read or written element by element.
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
    /// [`Error::Os`] if the shared memory cannot be made; [`Error::TooManyElements`] beyond
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
    /// [`Error::IndexOutOfRange`] past the end (nothing is written).
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
    /// [`Error::IndexOutOfRange`] if they do not fit (nothing is written).
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
