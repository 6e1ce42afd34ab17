//! Tests for `Value` and `Array` (shared numbers under a lock that works across processes)
//! and `RawValue` / `RawArray` (the same without a lock).

mod common;

use std::time::Duration;

use common::with;
use multiproc::{Array, Error, Lock, RawArray, RawValue, Value};

#[test]
fn smoke() {
    let v = Value::new(5i32).unwrap();
    v.set(7);
    assert_eq!(v.get(), 7);
    let a: Array<f64> = Array::zeroed(3).unwrap();
    assert_eq!(a.to_vec(), [0.0, 0.0, 0.0]);
    assert_eq!(a.len(), 3);
}

fn add_many((v, n): (Value<i64>, u32)) {
    for _ in 0..n {
        let mut g = v.lock();
        g.set(g.get() + 1);
    }
}

each_method! {
    // CPython: _TestValue.test_value, test_getobj_getlock (VALUE-01/-02)
    /// Eight processes add 1 to a locked value 10 000 times each: exactly 80 000.
    fn eight_processes_add_exactly(method: StartMethod) {
        let v = Value::new(0i64).unwrap();
        let mut children: Vec<_> = (0..8)
            .map(|_| with(method).spawn(add_many, (v.try_clone().unwrap(), 10_000)).unwrap())
            .collect();
        for c in &mut children {
            c.join().unwrap();
        }
        assert_eq!(v.get(), 80_000);
    }
}

fn fill((a, start): (Array<u32>, u32)) {
    let mut g = a.lock();
    for i in 0..g.len() {
        g.set(i, start + i as u32).unwrap();
    }
}

each_method! {
    // CPython: _TestArray.test_array (ARRAY-01)
    /// A child writes an array; the parent reads what it wrote.
    fn array_written_by_a_child(method: StartMethod) {
        let a: Array<u32> = Array::zeroed(1000).unwrap();
        with(method).spawn(fill, (a.try_clone().unwrap(), 7)).unwrap().join().unwrap();
        assert_eq!(a.to_vec(), (7..1007).collect::<Vec<u32>>());
        let mut g = a.lock();
        assert_eq!(g.get(1000), None);
        assert!(matches!(
            g.set(1000, 1),
            Err(Error::IndexOutOfRange { start: 1000, count: 1, len: 1000 })
        ));
    }
}

fn hold_and_hang((v, held): (Value<i32>, multiproc::SendEnd)) {
    let mut g = v.lock();
    g.set(-1);
    held.send(&()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

each_method! {
    /// A process killed while it holds the lock does not leave the others waiting for ever:
    /// the next `lock` takes it over and says so.
    fn owner_death_is_reported_not_a_hang(method: StartMethod) {
        let v = Value::new(0i32).unwrap();
        // Locks once here first: a fork child must not take this thread's (cached) id as its
        // own, or the takeover below would see itself as the owner.
        v.set(0);
        let (told, held) = multiproc::Pipe::one_way().unwrap();
        let mut holder = with(method).spawn(hold_and_hang, (v.try_clone().unwrap(), held)).unwrap();
        told.recv::<()>().unwrap();
        holder.kill().unwrap();
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
        // The kernel marked the lock as the holder died (issue 12, item 4): no owner now.
        assert!(!v.get_lock().locked());
        let g = v.lock();
        assert!(g.owner_died());
        assert_eq!(g.get(), -1);
        drop(g);
        assert!(!v.lock().owner_died());
    }
}

/// A value received as the wrong element type is a typed error, not garbage.
#[test]
fn wrong_element_type_is_a_typed_error() {
    let v = Value::new(1.5f64).unwrap();
    let (here, there) = multiproc::Pipe::new().unwrap();
    here.send(&v).unwrap();
    assert!(matches!(
        there.recv::<Value<i32>>(),
        Err(Error::Deserialize { .. })
    ));
}

/// A descriptor that is not a sealed memfd, sent where a `Value` or `RawValue` is expected
/// (a peer could shrink such memory and make the receiver fault with SIGBUS), is refused with
/// a typed error before it is mapped. Issue 12, item 4.
#[test]
fn unsealed_region_is_refused() {
    let (here, there) = multiproc::Pipe::new().unwrap();
    let (_keep, not_memory) = multiproc::Pipe::one_way().unwrap();
    here.send(&(&not_memory, None::<()>)).unwrap();
    let err = there.recv::<Value<i32>>().unwrap_err();
    assert!(matches!(err, Error::UnsealedSharedMemory { .. }), "{err}");
    here.send(&not_memory).unwrap();
    let err = there.recv::<RawValue<i32>>().unwrap_err();
    assert!(matches!(err, Error::UnsealedSharedMemory { .. }), "{err}");
    // The connection stays usable.
    let v = Value::new(9i32).unwrap();
    here.send(&v).unwrap();
    assert_eq!(there.recv::<Value<i32>>().unwrap().get(), 9);
}

/// SHM-01's five numbers, each in shared memory with a lock.
type Locked = (Value<i32>, Value<f64>, Value<i16>, Value<i64>, Value<u8>);
/// The same without a lock.
type Raw = (
    RawValue<i32>,
    RawValue<f64>,
    RawValue<i16>,
    RawValue<i64>,
    RawValue<u8>,
);

fn write_numbers((i, d, h, q, c): Locked) -> (i32, f64, i16, i64, u8) {
    let seen = (i.get(), d.get(), h.get(), q.get(), c.get());
    i.set(-7);
    d.set(2.5);
    h.set(-300);
    q.set(-(1 << 40));
    c.set(b'y');
    seen
}

fn write_raw_numbers((i, d, h, q, c): Raw) -> (i32, f64, i16, i64, u8) {
    let seen = (i.get(), d.get(), h.get(), q.get(), c.get());
    i.set(-7);
    d.set(2.5);
    h.set(-300);
    q.set(-(1 << 40));
    c.set(b'y');
    seen
}

const START: (i32, f64, i16, i64, u8) = (25, 3.625, -12, 1 << 33, b'x');
const WRITTEN: (i32, f64, i16, i64, u8) = (-7, 2.5, -300, -(1 << 40), b'y');

each_method! {
    /// SHM-01: values of several types (an i64 past 2³²) are readable in a child, and its
    /// writes are visible to the parent after join; the same without a lock.
    /// Ported from CPython: _TestValue.test_value, test_rawvalue
    fn shm_01_values_of_each_type(method: StartMethod) {
        let (i, d, h, q, c) = START;
        let v = (Value::new(i).unwrap(), Value::new(d).unwrap(), Value::new(h).unwrap(),
                 Value::new(q).unwrap(), Value::new(c).unwrap());
        let args = (v.0.try_clone().unwrap(), v.1.try_clone().unwrap(), v.2.try_clone().unwrap(),
                    v.3.try_clone().unwrap(), v.4.try_clone().unwrap());
        assert_eq!(with(method).spawn(write_numbers, args).unwrap().join().unwrap(), START);
        assert_eq!((v.0.get(), v.1.get(), v.2.get(), v.3.get(), v.4.get()), WRITTEN);

        let r = (RawValue::new(i).unwrap(), RawValue::new(d).unwrap(), RawValue::new(h).unwrap(),
                 RawValue::new(q).unwrap(), RawValue::new(c).unwrap());
        let args = (r.0.try_clone().unwrap(), r.1.try_clone().unwrap(), r.2.try_clone().unwrap(),
                    r.3.try_clone().unwrap(), r.4.try_clone().unwrap());
        assert_eq!(with(method).spawn(write_raw_numbers, args).unwrap().join().unwrap(), START);
        assert_eq!((r.0.get(), r.1.get(), r.2.get(), r.3.get(), r.4.get()), WRITTEN);
    }
}

/// SHM-02: a value comes with a lock of its own by default; a caller's lock is the one
/// used; `RawValue` has no lock at all (no lock accessors: a `compile_fail` doctest on
/// `RawValue` shows it).
/// Ported from CPython: _TestValue.test_getobj_getlock
#[test]
fn shm_02_value_lock_choice() {
    let v = Value::new(5i32).unwrap();
    assert!(!v.get_lock().locked());
    let guard = v.lock();
    assert!(v.get_lock().locked());
    assert!(v.try_lock().is_none());
    drop(guard);
    // Two values with their own locks do not share them.
    let w = Value::new(6i32).unwrap();
    let held = v.lock();
    assert!(w.try_lock().is_some());
    drop(held);

    let lock = Lock::new().unwrap();
    let v = Value::with_lock(5i32, lock.try_clone().unwrap()).unwrap();
    let held = lock.acquire();
    assert!(v.get_lock().locked());
    assert!(v.try_lock().is_none());
    assert!(v.lock_timeout(Duration::from_millis(20)).is_none());
    drop(held);
    let guard = v.lock();
    assert!(lock.locked());
    drop(guard);
    assert!(!lock.locked());

    let raw = RawValue::new(5i32).unwrap();
    raw.set(6);
    assert_eq!(raw.get(), 6);
}

fn prefix_sums_locked(a: Array<i32>) {
    let mut g = a.lock();
    for i in 1..g.len() {
        let sum = g.get(i).unwrap() + g.get(i - 1).unwrap();
        g.set(i, sum).unwrap();
    }
}

fn prefix_sums_raw(a: RawArray<i32>) {
    for i in 1..a.len() {
        a.set(i, a.get(i).unwrap() + a.get(i - 1).unwrap()).unwrap();
    }
}

const SEQ: [i32; 10] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
const SUMS: [i32; 10] = [0, 1, 3, 6, 10, 15, 21, 28, 36, 45];

each_method! {
    /// SHM-03: length, indexing, slicing and slice assignment; a child's in-place prefix sum
    /// is visible to the parent; the same without a lock.
    /// Ported from CPython: _TestArray.test_array, test_rawarray
    fn shm_03_array_slices_and_prefix_sums(method: StartMethod) {
        let a = Array::new(&SEQ).unwrap();
        assert_eq!(a.len(), 10);
        {
            let mut g = a.lock();
            assert_eq!(g.get(3), Some(3));
            assert_eq!(g.get_slice(2..5), Some(vec![2, 3, 4]));
            assert_eq!(g.get_slice(..), Some(SEQ.to_vec()));
            assert_eq!(g.get_slice(8..=9), Some(vec![8, 9]));
            assert_eq!(g.get_slice(9..11), None);
            g.set_slice(2, &[20, 30, 40]).unwrap();
            assert_eq!(g.get_slice(1..6), Some(vec![1, 20, 30, 40, 5]));
            assert!(matches!(
                g.set_slice(8, &[1, 2, 3]),
                Err(Error::IndexOutOfRange { start: 8, count: 3, len: 10 })
            ));
            assert_eq!(g.get(9), Some(9), "a refused slice wrote nothing");
            g.set_slice(2, &[2, 3, 4]).unwrap();
        }
        with(method).spawn(prefix_sums_locked, a.try_clone().unwrap()).unwrap().join().unwrap();
        assert_eq!(a.to_vec(), SUMS);

        let r = RawArray::new(&SEQ).unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!(r.get_slice(2..5), Some(vec![2, 3, 4]));
        r.set_slice(0, &[0, 1]).unwrap();
        assert!(matches!(
            r.set(10, 1),
            Err(Error::IndexOutOfRange { start: 10, count: 1, len: 10 })
        ));
        with(method).spawn(prefix_sums_raw, r.try_clone().unwrap()).unwrap().join().unwrap();
        assert_eq!(r.to_vec(), SUMS);
    }
}

/// SHM-04: an array made by size is all zeros, every time, even right after other arrays
/// were filled and freed.
/// Ported from CPython: _TestArray.test_array_from_size (bpo-11675)
#[test]
fn shm_04_zeroed_every_time() {
    for round in 0..20 {
        let a: Array<u64> = Array::zeroed(1000 + round).unwrap();
        assert!(a.to_vec().iter().all(|&x| x == 0), "round {round}");
        a.lock()
            .set_slice(0, &vec![u64::MAX; 1000 + round])
            .unwrap();
        let r: RawArray<u64> = RawArray::zeroed(1000 + round).unwrap();
        assert!(r.to_vec().iter().all(|&x| x == 0), "round {round}");
        r.set_slice(0, &vec![u64::MAX; 1000 + round]).unwrap();
    }
}

/// SHM-05: array lock choices mirror `Value`'s.
/// Ported from CPython: _TestArray.test_getobj_getlock_obj
#[test]
fn shm_05_array_lock_choice() {
    let a = Array::new(&[1u16, 2]).unwrap();
    let guard = a.lock();
    assert!(a.get_lock().locked());
    assert!(a.try_lock().is_none());
    drop(guard);

    let lock = Lock::new().unwrap();
    let b = Array::with_lock(&[1u16, 2], lock.try_clone().unwrap()).unwrap();
    let c = Array::with_lock(&[3u16], lock.try_clone().unwrap()).unwrap();
    let guard = b.lock();
    assert!(lock.locked());
    assert!(c.try_lock().is_none(), "one lock guards both arrays");
    drop(guard);
    assert!(!lock.locked());
    assert_eq!(c.to_vec(), [3]);
}

fn check_shared_lock((v, lock): (Value<i32>, Lock)) -> bool {
    let _held = lock.acquire();
    v.try_lock().is_none()
}

each_method! {
    /// SHM-02 across processes: a value sent with a caller's lock still uses that lock in
    /// the child (the lock travels beside the value).
    /// Ported from CPython: _TestValue.test_getobj_getlock
    fn shm_02_callers_lock_travels(method: StartMethod) {
        let lock = Lock::new().unwrap();
        let v = Value::with_lock(1i32, lock.try_clone().unwrap()).unwrap();
        let args = (v.try_clone().unwrap(), lock.try_clone().unwrap());
        assert!(with(method).spawn(check_shared_lock, args).unwrap().join().unwrap());
    }
}

fn double(v: Value<f64>) {
    let mut g = v.lock();
    g.set(g.get() * 2.0);
}

each_method! {
    /// Acceptance 26: an `Array<i32>` of 10 made by size is all zeros; a child writes prefix
    /// sums the parent reads back; a child doubles a `Value<f64>` of 1/3 to 2/3.
    fn acceptance_26_value_and_array(method: StartMethod) {
        let a: Array<i32> = Array::zeroed(10).unwrap();
        assert_eq!(a.to_vec(), [0; 10]);
        a.lock().set_slice(0, &SEQ).unwrap();
        with(method).spawn(prefix_sums_locked, a.try_clone().unwrap()).unwrap().join().unwrap();
        assert_eq!(a.to_vec(), SUMS);
        let v = Value::new(1.0 / 3.0).unwrap();
        with(method).spawn(double, v.try_clone().unwrap()).unwrap().join().unwrap();
        assert_eq!(v.get(), 2.0 / 3.0);
    }
}

/// An array received where a single value is expected is a typed error, not a misread.
#[test]
fn array_received_as_a_value_is_a_typed_error() {
    let (here, there) = multiproc::Pipe::new().unwrap();
    here.send(&Array::new(&[1i32, 2]).unwrap()).unwrap();
    assert!(matches!(
        there.recv::<Value<i32>>(),
        Err(Error::Deserialize { .. })
    ));
    here.send(&RawArray::<i32>::zeroed(0).unwrap()).unwrap();
    assert!(matches!(
        there.recv::<RawValue<i32>>(),
        Err(Error::Deserialize { .. })
    ));
    here.send(&Value::new(3i32).unwrap()).unwrap();
    assert_eq!(there.recv::<Value<i32>>().unwrap().get(), 3);
}

/// SHM-07: what `get` and `to_vec` return is a private copy: later writes to the shared value
/// do not reach it, and writing it does not reach the shared value.
///
/// Ported from CPython: _TestSharedCTypes.test_copy
#[test]
fn shm_07_copies_are_private() {
    let a = Array::new(&[1.5f64, 2.5, 3.5]).unwrap();
    let mut copy = a.to_vec();
    a.lock().set(0, 9.0).unwrap();
    assert_eq!(copy, [1.5, 2.5, 3.5]);
    copy[1] = -1.0;
    assert_eq!(a.to_vec(), [9.0, 2.5, 3.5]);
    let v = Value::new(7u16).unwrap();
    let mut n = v.get();
    n += 1;
    assert_eq!((v.get(), n), (7, 8));
}

/// Mappings of this crate's shared memory in this process.
fn shared_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("multiproc-shared"))
        .count()
}

/// Runs in a child of its own (no other test maps shared memory there meanwhile): makes 5000
/// arrays of pseudo-random sizes, writes each a distinct pattern, checks none overlaps another,
/// drops them in a scrambled order; returns the mapping counts before and after.
fn many_blocks(_: ()) -> (usize, usize) {
    let before = shared_mappings();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut blocks: Vec<(u32, RawArray<u32>)> = (0..5000u32)
        .map(|i| {
            let len = 1 + (next() % 300) as usize;
            let a = RawArray::<u32>::zeroed(len).unwrap();
            for j in 0..len {
                a.set(j, i).unwrap();
            }
            (i, a)
        })
        .collect();
    for (i, a) in &blocks {
        assert!(
            a.to_vec().iter().all(|x| x == i),
            "block {i} was overwritten"
        );
    }
    assert!(
        shared_mappings() >= before + 5000,
        "the blocks are not where this test looks"
    );
    while !blocks.is_empty() {
        let k = (next() as usize) % blocks.len();
        blocks.swap_remove(k);
    }
    (before, shared_mappings())
}

/// SHM-08: 5000 blocks of shared memory of random sizes never overlap, and freeing them all
/// leaves nothing mapped (each block is its own memfd mapping, so there is no heap to corrupt).
///
/// Ported from CPython: _TestHeap.test_heap
#[test]
fn shm_08_many_blocks_never_overlap_and_are_all_unmapped() {
    let (before, after) = multiproc::Process::spawn(many_blocks, ())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(before, after);
}

/// An array longer than its header's `u32` count is refused before any memory is made.
#[test]
fn an_array_over_u32_max_elements_is_refused() {
    let count = u32::MAX as usize + 1;
    let limit = u32::MAX as usize;
    let too_many = |e: &Error| matches!(e, Error::TooManyElements { count: c, limit: l } if *c == count && *l == limit);
    assert!(too_many(&RawArray::<u8>::zeroed(count).err().unwrap()));
    assert!(too_many(&Array::<u8>::zeroed(count).err().unwrap()));
}
