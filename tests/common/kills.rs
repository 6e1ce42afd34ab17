//! Bodies and checks for the tests that SIGKILL producers and consumers of a `Queue`
//! (tests/queue.rs does a few rounds per start method, tests/faults.rs 200 kills each).

use std::collections::BTreeMap;

use multiproc::{Connection, Queue};

/// Puts `(id, 0)`, `(id, 1)`, ... until killed; a producer child body.
pub fn put_forever((q, id): (Queue<(u32, u32)>, u32)) {
    for i in 0.. {
        q.put(&(id, i)).unwrap();
    }
}

/// Takes items and reports each on `out` until killed; a consumer child body.
pub fn get_forever((q, out): (Queue<(u32, u32)>, Connection)) {
    loop {
        let item = q.get().unwrap();
        out.send(&item).unwrap();
    }
}

/// Items taken, checked per producer: `got[id]` must be exactly 0..n in order (an unbroken
/// prefix of what producer `id` put, each item once).
pub fn assert_prefixes(got: &BTreeMap<u32, Vec<u32>>) {
    for (id, items) in got {
        let expected: Vec<u32> = (0..items.len() as u32).collect();
        assert!(
            items == &expected,
            "producer {id}: items missing, repeated or out of order"
        );
    }
}
