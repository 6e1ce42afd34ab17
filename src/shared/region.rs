//! The shared-memory region under every shared number: a memfd mapped `MAP_SHARED`, its
//! 48-byte header (the lock's block, the element count, the type code and size), and atomic
//! access to the elements that follow. It travels between processes as a descriptor and is
//! checked against the element type (and its seals and size) when received.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::element::Element;
use crate::codec;
use crate::sync::Lock;
use crate::sys::{self, SharedMapping, LOCK_SIZE};
use crate::Error;

pub(super) const LOCK: usize = 0;
const COUNT: usize = LOCK_SIZE;
const TYPECODE: usize = COUNT + 4;
const ELEMENT_SIZE: usize = TYPECODE + 1;
const DATA: usize = COUNT + 8;

/// An array of `count` elements, more than the header's `u32` count holds.
fn too_many(count: usize) -> Error {
    Error::TooManyElements {
        count,
        limit: u32::MAX as usize,
    }
}

/// A region of shared memory holding `count` elements of `T` after the header.
pub(super) struct Region<T> {
    pub(super) map: Arc<SharedMapping>,
    pub(super) count: usize,
    _t: PhantomData<T>,
}

impl<T: Element> Region<T> {
    pub(super) fn new(values: &[T]) -> Result<Region<T>, Error> {
        let count = u32::try_from(values.len()).map_err(|_| too_many(values.len()))?;
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
    pub(super) fn zeroed(len: usize) -> Result<Region<T>, Error> {
        let count = u32::try_from(len).map_err(|_| too_many(len))?;
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
    pub(super) fn builtin_lock(&self) -> Lock {
        Lock::embedded(Arc::clone(&self.map), LOCK)
    }

    /// Element `i`, one atomic load (every access is atomic: a lock-free reader may run at
    /// the same time as a locked writer).
    pub(super) fn load(&self, i: usize) -> T {
        T::from_bits(self.map.load_bits(self.offset(i), std::mem::size_of::<T>()))
    }

    pub(super) fn store(&self, i: usize, v: T) {
        self.map
            .store_bits(self.offset(i), std::mem::size_of::<T>(), v.to_bits());
    }

    pub(super) fn get(&self, i: usize) -> Option<T> {
        (i < self.count).then(|| self.load(i))
    }

    pub(super) fn set(&self, i: usize, value: T) -> Result<(), Error> {
        if i >= self.count {
            return Err(Error::IndexOutOfRange {
                start: i,
                count: 1,
                len: self.count,
            });
        }
        self.store(i, value);
        Ok(())
    }

    pub(super) fn to_vec(&self) -> Vec<T> {
        (0..self.count).map(|i| self.load(i)).collect()
    }

    pub(super) fn get_slice(&self, range: impl RangeBounds<usize>) -> Option<Vec<T>> {
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

    pub(super) fn set_slice(&self, start: usize, values: &[T]) -> Result<(), Error> {
        if start
            .checked_add(values.len())
            .is_none_or(|end| end > self.count)
        {
            return Err(Error::IndexOutOfRange {
                start,
                count: values.len(),
                len: self.count,
            });
        }
        for (i, v) in values.iter().enumerate() {
            self.store(start + i, *v);
        }
        Ok(())
    }

    pub(super) fn count(&self) -> usize {
        self.count
    }

    pub(super) fn share(&self) -> Region<T> {
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

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    use super::*;
    use crate::codec::{decode_in, encode_in, FdTable, Handle};
    use crate::shared::Value;

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
