//! [`Locked`]: a region and the lock that guards it, which is what `Value` and `Array` are,
//! and the lock API they share, written once here: [`Held`] (the region with its lock taken,
//! inside each public guard) and `lock_api!` (the public `lock`, `try_lock`, `lock_timeout`,
//! `get_lock`, `try_clone` and the guards' `owner_died`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::element::Element;
use super::region::{Region, LOCK};
use crate::sync::{Lock, LockGuard};
use crate::Error;

/// A region and the lock that guards it: what `Value` and `Array` are.
pub(super) struct Locked<T> {
    pub(super) region: Region<T>,
    pub(super) lock: Lock,
}

impl<T: Element> Locked<T> {
    pub(super) fn count(&self) -> usize {
        self.region.count
    }

    pub(super) fn builtin(region: Region<T>) -> Locked<T> {
        let lock = region.builtin_lock();
        Locked { region, lock }
    }

    pub(super) fn try_clone(&self) -> Result<Locked<T>, Error> {
        Ok(Locked {
            region: self.region.share(),
            lock: self.lock.try_clone()?,
        })
    }

    /// Takes the lock, waiting as long as it takes.
    pub(super) fn hold(&self) -> Held<'_, T> {
        self.held(self.lock.acquire())
    }

    /// Takes the lock if it is free now.
    pub(super) fn try_hold(&self) -> Option<Held<'_, T>> {
        self.lock.try_acquire().map(|g| self.held(g))
    }

    /// Takes the lock, waiting at most `timeout`.
    pub(super) fn hold_timeout(&self, timeout: Duration) -> Option<Held<'_, T>> {
        self.lock.acquire_timeout(timeout).map(|g| self.held(g))
    }

    fn held<'a>(&'a self, guard: LockGuard<'a>) -> Held<'a, T> {
        Held {
            region: &self.region,
            guard,
        }
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

/// A region with its lock taken: what a [`ValueGuard`](super::ValueGuard) or an
/// [`ArrayGuard`](super::ArrayGuard) holds. The lock is released when it is dropped.
pub(super) struct Held<'a, T> {
    pub(super) region: &'a Region<T>,
    pub(super) guard: LockGuard<'a>,
}

impl<T> Held<'_, T> {
    /// Whether the previous owner died holding the lock.
    pub(super) fn owner_died(&self) -> bool {
        self.guard.owner_died()
    }
}

/// The lock API of a handle `$handle<T>(Locked<T>)` and its guard `$guard<'a, T>(Held<'a, T>)`;
/// `$what` names what the handle holds in the docs ("number", "array").
macro_rules! lock_api {
    ($handle:ident, $guard:ident, $what:literal) => {
        impl<T: Element> $handle<T> {
            #[doc = concat!("Takes the lock, waiting as long as it takes (`with x.get_lock():`). ",
                        "A lock whose owner\ndied holding it is taken over ([`", stringify!($guard),
                        "::owner_died`]).")]
            pub fn lock(&self) -> $guard<'_, T> {
                $guard(self.0.hold())
            }

            /// Takes the lock if it is free now.
            pub fn try_lock(&self) -> Option<$guard<'_, T>> {
                self.0.try_hold().map($guard)
            }

            /// Takes the lock, waiting at most `timeout`.
            pub fn lock_timeout(&self, timeout: std::time::Duration) -> Option<$guard<'_, T>> {
                self.0.hold_timeout(timeout).map($guard)
            }

            #[doc = concat!("The lock that guards the ", $what, " (CPython's `get_lock()`): ",
                        "the built-in one or the one\ngiven to [`with_lock`](Self::with_lock).")]
            pub fn get_lock(&self) -> &crate::sync::Lock {
                &self.0.lock
            }

            #[doc = concat!("Another handle on the same ", $what, ".")]
            ///
            /// # Errors
            /// None today (the handle shares this process's mapping); kept fallible like the other
            /// handles' `try_clone`.
            pub fn try_clone(&self) -> Result<$handle<T>, crate::Error> {
                self.0.try_clone().map($handle)
            }
        }

        impl<T: Element> $guard<'_, T> {
            #[doc = concat!("Whether the previous owner died holding the lock (the ", $what,
                        " may be half-updated).")]
            pub fn owner_died(&self) -> bool {
                self.0.owner_died()
            }
        }

        impl<T: Element> std::fmt::Debug for $guard<'_, T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($guard))
                    .field("region", self.0.region)
                    .field("guard", &self.0.guard)
                    .finish()
            }
        }
    };
}
pub(super) use lock_api;
