//! A mock OpenAI-compatible upstream for the SDK test and the load script (tests only).
//!
//! `mock-upstream [ADDR]` (default 127.0.0.1:0) prints `listening http://ADDR/v1` and serves
//! until killed. `MOCK_CHUNK_DELAY_MS` sets the pause between streamed chunks;
//! `MOCK_STREAM_ECHO_BYTES` makes a streamed answer echo the last message in pieces of that
//! many bytes instead of three numbered words.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use enclave_test_support::{Behavior, MockUpstream};

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("address: {e}"))
        })?;
    let delay = std::env::var("MOCK_CHUNK_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::ZERO, Duration::from_millis);
    let echo = std::env::var("MOCK_STREAM_ECHO_BYTES")
        .ok()
        .and_then(|v| v.parse().ok());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mock = MockUpstream::start_on(
            addr,
            Behavior {
                chunk_delay: delay,
                stream_echo: echo,
                ..Behavior::default()
            },
        )
        .await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening {}", mock.base_url())?;
        out.flush()?;
        drop(out);
        std::future::pending::<std::io::Result<()>>().await
    })
}
