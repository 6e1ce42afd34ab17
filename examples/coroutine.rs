//! Mirrors the `gevent.spawn` + `gevent.joinall` listing of tutorial note 004: three page fetches
//! run concurrently on one thread and finish in a different order from the one they started in.
//!
//! What differs in Rust: coroutines are async tasks on a single-threaded tokio runtime (no monkey
//! patching: the I/O calls are async by type). The listing fetches pages from the internet; CI has
//! no network, so a local server (`examples/common/pages.rs`) serves pages of the same sizes from
//! loopback, each after its own delay (`--delay-ms`, default 200, per unit). Each line names the
//! thread it ran on, to show that it is always the same one.
//!
//!     cargo run --example coroutine [-- --delay-ms N]

mod common;
#[path = "common/pages.rs"]
mod pages;

async fn run_task(url: String) {
    println!("Visit --> {url}");
    match pages::fetch(&url).await {
        Ok(data) => println!(
            "{} bytes received from {url}. (thread {})",
            data.len(),
            common::thread_name()
        ),
        Err(e) => println!("{e}"),
    }
}

fn main() -> std::io::Result<()> {
    let delay_ms: u64 = common::arg("--delay-ms", 200);
    pages::run_with_pages(delay_ms, |urls| async move {
        // gevent.spawn for each URL, then gevent.joinall.
        let greenlets: Vec<_> = urls
            .into_iter()
            .map(|url| tokio::spawn(run_task(url)))
            .collect();
        for greenlet in greenlets {
            greenlet.await.map_err(std::io::Error::other)?;
        }
        Ok(())
    })
}
