//! The worker loop: a long-lived process that runs batches of tasks until its socket closes.
//!
//! A worker reads one batch, runs its tasks in order, and writes their results in order. It
//! flushes the results it holds when they reach [`FLUSH_BYTES`], when [`FLUSH_AFTER`] has
//! passed since the last flush (so a slow task's neighbours are not held back), and always at
//! the end of a batch, before it reads the next one: the parent relies on that to know which
//! batch a dead worker was running. A panicking task is caught by its trampoline and reported
//! as a failure; the worker carries on. End of stream on the socket (the parent closed it to
//! retire the worker or to close the pool) ends the loop and the process exits 0.
//!
//! Each task's [`TaggedCall`] is checked against the family's key before it runs (see
//! `bootstrap`'s module docs); the worker remembers the entries that passed, so a batch of
//! tasks of one function costs one HMAC for the worker's whole life. A task whose entry fails
//! the check is not run: it is reported as [`Failure::Unauthenticated`].

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::codec::FdTable;
use crate::connection::Connection;
use crate::process::bootstrap::{Failure, Outcome, TaggedCall, Verifier};

use super::job::{self, Reader, INIT_FAILED_ID, TAG_FAILED, TAG_RETURNED};

/// Flush the results held once they reach this size (one socket record).
pub(crate) const FLUSH_BYTES: usize = 60 * 1024;
/// Flush the results held once this long has passed since the last flush.
const FLUSH_AFTER: Duration = Duration::from_millis(1);

/// What a worker process is started with.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    /// Tasks in, results out.
    pub(crate) conn: Connection,
    /// The initializer: the 16-byte entry, then its pickled arguments.
    pub(crate) init: Option<serde_bytes::ByteBuf>,
}

/// The worker process's function.
pub(crate) fn main(args: WorkerArgs) {
    let conn = args.conn;
    let mut verifier = Verifier::new();
    if let Some(init) = args.init {
        if let Err(failure) = run_initializer(&mut verifier, &init) {
            let mut out = 0u64.to_le_bytes().to_vec();
            let body = codec::encode(&failure).unwrap_or_default();
            job::push_result(&mut out, INIT_FAILED_ID, TAG_FAILED, &body);
            let _ = conn.send_parts(&[&out], &[]);
            return;
        }
    }
    let mut out = Vec::with_capacity(FLUSH_BYTES + 1024);
    while let Ok((batch, _fds)) = conn.recv_raw() {
        if run_batch(&conn, &mut verifier, &batch, &mut out).is_err() {
            return;
        }
    }
}

fn run_initializer(verifier: &mut Verifier, init: &[u8]) -> Result<(), Failure> {
    let (entry, args) = init.split_at(TaggedCall::LEN.min(init.len()));
    let entry = entry
        .try_into()
        .map_err(|_| Failure::Refused("malformed initializer".into()))?;
    match run_task(verifier, TaggedCall::from_bytes(entry), args) {
        Outcome::Returned(..) => Ok(()),
        Outcome::Failed(failure) => Err(failure),
    }
}

/// Runs every task of one batch, flushing results as described in the module docs.
fn run_batch(
    conn: &Connection,
    verifier: &mut Verifier,
    batch: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), crate::Error> {
    let mut reader = Reader::new(batch);
    let mut since_flush = Instant::now();
    out.clear();
    out.extend_from_slice(&0u64.to_le_bytes());
    while !reader.is_empty() {
        let Some((id, entry, args)) = reader.task() else {
            // A malformed batch cannot come from our parent; stop rather than guess.
            return Err(crate::Error::Malformed { what: "pool batch" });
        };
        record(out, id, run_task(verifier, entry, args));
        let elapsed = since_flush.elapsed();
        if out.len() >= FLUSH_BYTES || elapsed >= FLUSH_AFTER {
            flush(conn, out, elapsed)?;
            since_flush = Instant::now();
        }
    }
    flush(conn, out, since_flush.elapsed())
}

/// Runs one task if its entry verifies.
fn run_task(verifier: &mut Verifier, entry: TaggedCall, args: &[u8]) -> Outcome {
    match verifier.verify(entry, "a pool task") {
        Ok(call) => call.run(args, &mut FdTable::default()),
        Err(_) => Outcome::Failed(Failure::Unauthenticated),
    }
}

fn record(out: &mut Vec<u8>, id: u64, outcome: Outcome) {
    match outcome {
        Outcome::Returned(bytes, fds) if fds.is_empty() => {
            job::push_result(out, id, TAG_RETURNED, &bytes)
        }
        Outcome::Returned(..) => {
            let failure = Failure::ResultUnencodable(
                "it holds OS handles, which a pool result cannot carry".into(),
            );
            job::push_result(
                out,
                id,
                TAG_FAILED,
                &codec::encode(&failure).unwrap_or_default(),
            )
        }
        Outcome::Failed(failure) => job::push_result(
            out,
            id,
            TAG_FAILED,
            &codec::encode(&failure).unwrap_or_default(),
        ),
    }
}

/// Sends the held results (if any) with the time spent on them, and starts a new buffer.
fn flush(conn: &Connection, out: &mut Vec<u8>, busy: Duration) -> Result<(), crate::Error> {
    if out.len() > 8 {
        out[..8].copy_from_slice(&(busy.as_nanos() as u64).to_le_bytes());
        conn.send_parts(&[out], &[])?;
    }
    out.clear();
    out.extend_from_slice(&0u64.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::bootstrap::{self, Trampoline};

    fn add_one(x: u64) -> u64 {
        x + 1
    }

    fn times_ten(x: u64) -> u64 {
        x * 10
    }

    fn task(out: &mut Vec<u8>, id: u64, entry: [u8; TaggedCall::LEN], arg: u64) {
        let args = codec::encode(&arg).unwrap();
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&entry);
        out.extend_from_slice(&(args.len() as u32).to_le_bytes());
        out.extend_from_slice(&args);
    }

    /// A worker sent a forged entry (the offsets of another function under a genuine tag, so
    /// that an unchecked worker would run `times_ten`) refuses that task and runs the others.
    #[test]
    fn forged_entry_is_refused_and_the_batch_goes_on() {
        let entry = |f: fn(u64) -> u64| {
            TaggedCall::new(bootstrap::trampoline::<u64, u64> as Trampoline, f as usize).to_bytes()
        };
        let good = entry(add_one);
        let mut forged = good;
        forged[8..16].copy_from_slice(&entry(times_ten)[8..16]);
        let mut batch = Vec::new();
        task(&mut batch, 1, good, 1);
        task(&mut batch, 2, forged, 2);
        task(&mut batch, 3, good, 3);

        let (ours, theirs) = crate::Pipe::new().unwrap();
        let mut verifier = Verifier::new();
        let mut out = Vec::new();
        run_batch(&theirs, &mut verifier, &batch, &mut out).unwrap();
        let mut results = Vec::new();
        while results.len() < 3 {
            let (message, _) = ours.recv_raw().unwrap();
            let mut reader = Reader::new(&message[8..]);
            while let Some((id, tag, body)) = reader.result() {
                results.push((id, tag, body.to_vec()));
            }
        }
        assert_eq!(results[0].0, 1);
        assert_eq!(results[0].1, TAG_RETURNED);
        assert_eq!(codec::decode::<u64>(&results[0].2).unwrap(), 2);
        assert_eq!((results[1].0, results[1].1), (2, TAG_FAILED));
        assert!(matches!(
            codec::decode::<Failure>(&results[1].2).unwrap(),
            Failure::Unauthenticated
        ));
        assert_eq!(codec::decode::<u64>(&results[2].2).unwrap(), 4);
    }

    /// A forged initializer is refused before it runs.
    #[test]
    fn forged_initializer_is_refused() {
        let mut init = TaggedCall::new(
            bootstrap::trampoline::<u64, u64> as Trampoline,
            add_one as fn(u64) -> u64 as usize,
        )
        .to_bytes()
        .to_vec();
        init[20] ^= 1;
        init.extend(codec::encode(&1u64).unwrap());
        let failure = run_initializer(&mut Verifier::new(), &init).unwrap_err();
        assert!(matches!(failure, Failure::Unauthenticated), "{failure:?}");
    }
}
