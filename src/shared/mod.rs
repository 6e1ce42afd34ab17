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
//! The built-in lock is a [`Lock`](crate::Lock) whose block is the header's (no second memfd); a
//! `Value::with_lock` / `Array::with_lock` uses the caller's `Lock` instead, which can then
//! guard several values at once (CPython's `Value('i', 0, lock=lock)`). Either way the lock
//! survives its owner's death: the kernel marks it and wakes a waiter, which takes it over, and
//! the guard reports it with [`ValueGuard::owner_died`]: the data may be half-updated, as
//! with a robust pthread mutex's `EOWNERDEAD`. See [`Lock`](crate::Lock) for the details.
//!
//! # Without a lock
//! [`RawValue`] and [`RawArray`] (CPython's `lock=False`) read and write each element with
//! one atomic load or store (acquire / release), so a read never sees a torn number, but a
//! read-modify-write from two processes can lose updates: that is what the lock is for.
//!
//! # Files
//! - `element`: [`Element`], the numbers a region may hold;
//! - `region`: the memfd region, its header and atomic element access;
//! - `locked`: a region with its lock, and the lock API `Value` and `Array` share;
//! - `value`: [`Value`] and [`RawValue`]; `array`: [`Array`] and [`RawArray`].

mod array;
mod element;
mod locked;
mod region;
mod value;

pub use array::{Array, ArrayGuard, RawArray};
pub use element::Element;
pub use value::{RawValue, Value, ValueGuard};
