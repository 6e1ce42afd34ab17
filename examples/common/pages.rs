//! A tiny local web server for the coroutine examples: the tutorials fetch real web pages, CI has
//! no network, so these examples fetch pages of the same sizes from loopback instead. Each page
//! is answered after its own delay, so concurrent fetches finish out of order, as in the listing.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Paths served, with the body sizes the listing printed and a delay in units of `delay_ms`.
pub const PAGES: [(&str, usize, u64); 3] = [
    ("/github.com/", 25_482, 2),
    ("/www.python.org/", 47_445, 3),
    ("/", 45_740, 1),
];

/// Binds 127.0.0.1 on a free port and serves [`PAGES`] until the runtime ends; returns the base
/// URL (`http://127.0.0.1:PORT`).
pub async fn serve(delay_ms: u64) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, delay_ms));
        }
    });
    Ok(base)
}

/// Answers one `GET` request with the page's body, after the page's delay.
async fn answer(mut stream: TcpStream, delay_ms: u64) -> std::io::Result<()> {
    let mut request = vec![0u8; 1024];
    let n = stream.read(&mut request).await?;
    let request = String::from_utf8_lossy(&request[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("/");
    let Some(&(_, size, units)) = PAGES.iter().find(|(p, _, _)| *p == path) else {
        return stream
            .write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
    };
    tokio::time::sleep(Duration::from_millis(units * delay_ms)).await;
    let header = format!("HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n");
    stream.write_all(header.as_bytes()).await?;
    stream.write_all(&vec![b'x'; size]).await
}

/// Runs `visit` on a single-threaded tokio runtime (one thread, as gevent's greenlets share
/// one), with the page server started and the URLs of [`PAGES`] in hand.
pub fn run_with_pages<F, Fut>(delay_ms: u64, visit: F) -> std::io::Result<()>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let base = serve(delay_ms).await?;
        let urls = PAGES
            .iter()
            .map(|(path, _, _)| format!("{base}{path}"))
            .collect();
        visit(urls).await
    })
}

/// The listing's `urllib2.urlopen(url).read()`: fetches `url` over HTTP/1.0 and returns the body.
pub async fn fetch(url: &str) -> std::io::Result<Vec<u8>> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other(format!("not an http URL: {url}")))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(host).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let body_at = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .ok_or_else(|| std::io::Error::other(format!("no HTTP header from {url}")))?;
    if !response.starts_with(b"HTTP/1.0 200") {
        return Err(std::io::Error::other(format!("{url}: not found")));
    }
    Ok(response.split_off(body_at))
}
