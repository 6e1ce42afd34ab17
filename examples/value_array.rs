//! Mirrors the shared-memory example that tutorial note 004 mentions beside `Queue` and `Pipe`
//! (`Value` + `Array`, the example of CPython's documentation): a child sets a shared
//! `Value('d', 0.0)` to π and negates a shared `Array('i', range(10))`; the parent prints both.
//!
//! What differs in Rust: the shared objects are typed (`Value<f64>`, `Array<i32>`), and
//! reading or writing happens under their lock through a guard (`value.lock()`), where CPython
//! takes the lock inside each `.value` access and leaves read-modify-write to `get_lock()`.
//!
//!     cargo run --example value_array

use multiproc::{Array, Process, Value};

fn f((n, a): (Value<f64>, Array<i32>)) {
    n.set(std::f64::consts::PI);
    let mut a = a.lock();
    for i in 0..a.len() {
        let x = a.get(i).expect("in range");
        a.set(i, -x).expect("in range");
    }
}

fn main() -> Result<(), multiproc::Error> {
    let num = Value::new(0.0f64)?;
    let arr = Array::new(&(0..10).collect::<Vec<i32>>())?;
    let mut p = Process::spawn(f, (num.try_clone()?, arr.try_clone()?))?;
    p.join()?;
    println!("{:.7}", num.get());
    println!("{:?}", arr.to_vec());
    Ok(())
}
