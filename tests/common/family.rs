//! A process's family as /proc shows it, for the tests that kill or interrupt a parent and
//! check that its descendants go too (tests/faults.rs, tests/signals.rs).

use std::time::{Duration, Instant};

/// Every descendant of `pid`, from /proc (`task/*/children`).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                todo.push(child);
            }
        }
    }
    found
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so
/// that a test can watch them and reap them. Only for a process of the test's own.
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) has no memory effects.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) }, 0);
}

/// Reaps every exited child of this process that no `Process` handle owns (the orphans a
/// subreaper adopted).
pub fn reap_adopted() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only to `status`.
        if unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } <= 0 {
            return;
        }
    }
}

/// Those of `pids` still alive (a zombie counts as gone).
pub fn alive(pids: &[(u32, String)]) -> Vec<(u32, String)> {
    pids.iter()
        .filter(|(pid, _)| !matches!(super::pid_state(*pid), None | Some('Z')))
        .cloned()
        .collect()
}

/// Waits until `limit` after `since` for every one of `pids` (orphans of this subreaper) to
/// end, reaping them; returns those still alive then and the time from `since` until the last
/// went. Survivors are then SIGKILLed and reaped, so that the test leaves nothing behind.
pub fn await_gone(
    pids: &[(u32, String)],
    since: Instant,
    limit: Duration,
) -> (Vec<(u32, String)>, Duration) {
    let mut left = alive(pids);
    while !left.is_empty() && since.elapsed() < limit {
        reap_adopted();
        std::thread::sleep(Duration::from_millis(5));
        left = alive(pids);
    }
    let took = since.elapsed();
    for (pid, _) in &left {
        // SAFETY: kill(2) has no memory effects.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    super::eventually(Duration::from_secs(60), || {
        reap_adopted();
        pids.iter().all(|(pid, _)| !super::pid_exists(*pid))
    });
    (left, took)
}
