//! Tests for `Value` and `Array`: shared numbers under a lock that works across processes.

mod common;

use std::time::Duration;

use common::with;
use multiproc::{Array, Error, Value};

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
        assert!(matches!(g.set(1000, 1), Err(Error::InvalidArgument(_))));
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
        let g = v.lock();
        assert!(g.owner_died());
        assert_eq!(g.get(), -1);
        drop(g);
        assert!(!v.lock().owner_died());
        assert!(matches!(holder.join(), Err(Error::Signaled { .. })));
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
