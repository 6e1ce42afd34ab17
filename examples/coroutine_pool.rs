//! Mirrors the gevent `Pool(2).map(run_task, urls)` listing of tutorial note 004: three page
//! fetches, at most two at a time; the third starts only when one of the first two is done, and
//! `map` returns the results in input order.
//!
//! What differs in Rust: the pool is a `tokio::sync::Semaphore` with two permits on a
//! single-threaded runtime; "map" spawns every task, each waits for a permit, and the results are
//! collected in input order. Pages come from a local server (`examples/common/pages.rs`) instead
//! of the internet; `--delay-ms` (default 200) scales their delays.
//!
//!     cargo run --example coroutine_pool [-- --delay-ms N]

mod common;
#[path = "common/pages.rs"]
mod pages;

use std::sync::Arc;

use tokio::sync::Semaphore;

async fn run_task(url: String) -> String {
    println!("Visit --> {url}");
    match pages::fetch(&url).await {
        Ok(data) => println!("{} bytes received from {url}.", data.len()),
        Err(e) => println!("{e}"),
    }
    format!("url:{url} --->finish")
}

/// gevent's `Pool(size).map`: run `task` on every input with at most `size` running at once,
/// and return the outputs in input order.
async fn pool_map(size: usize, urls: Vec<String>) -> Result<Vec<String>, tokio::task::JoinError> {
    let permits = Arc::new(Semaphore::new(size));
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let permits = Arc::clone(&permits);
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("never closed");
                run_task(url).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await?);
    }
    Ok(results)
}

fn main() -> std::io::Result<()> {
    let delay_ms: u64 = common::arg("--delay-ms", 200);
    pages::run_with_pages(delay_ms, |urls| async move {
        let results = pool_map(2, urls).await.map_err(std::io::Error::other)?;
        println!("{results:?}");
        Ok(())
    })
}
