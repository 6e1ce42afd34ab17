//! Small helpers shared by the examples: command-line flags, the tutorials' random pauses and
//! thread names. Not an example itself (cargo only builds `examples/*.rs` and `*/main.rs`).
// Each example uses a different subset of these helpers.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

/// The value after `flag` on the command line (`--sleep-ms 10`), or `default`.
///
/// # Panics
/// If the value does not parse, naming the flag: examples fail loudly on bad input.
pub fn arg<T: FromStr>(flag: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == flag) {
        None => default,
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{flag} needs a valid value")),
    }
}

/// Whether `flag` is on the command line.
pub fn flag(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// The tutorials' `time.sleep(random.random())`, scaled: pauses up to `max` drawn from a
/// xorshift generator, so the examples need no random-number dependency.
#[derive(Debug)]
pub struct Jitter {
    state: u64,
    max: Duration,
}

impl Jitter {
    /// Pauses up to `max_ms` milliseconds; `seed` varies the sequence (the PID is a good one).
    pub fn new(max_ms: u64, seed: u64) -> Self {
        Jitter {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            max: Duration::from_millis(max_ms),
        }
    }

    /// The next pause.
    pub fn next(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let max_ms = self.max.as_millis() as u64;
        Duration::from_millis(self.state % (max_ms + 1))
    }

    /// Sleep for the next pause.
    pub fn sleep(&mut self) {
        std::thread::sleep(self.next());
    }
}

/// The current thread's name, as Python's `threading.current_thread().name`.
pub fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string()
}
