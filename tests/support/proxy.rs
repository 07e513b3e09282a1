//! A loopback TCP proxy between the stores and Redis that can add latency,
//! black-hole traffic, or reset every connection, on demand.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PASS: u8 = 0;
const BLACKHOLE: u8 = 1;
const RESET: u8 = 2;

#[derive(Clone)]
pub struct FaultProxy {
    mode: Arc<AtomicU8>,
    delay_ms: Arc<AtomicU64>,
    /// Bumped on every reset: connections from before it close.
    epoch: Arc<AtomicU64>,
    port: u16,
}

impl FaultProxy {
    /// Proxies a free loopback port to `upstream_port`.
    pub async fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let proxy = FaultProxy {
            mode: Arc::new(AtomicU8::new(PASS)),
            delay_ms: Arc::new(AtomicU64::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
            port,
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.mode.load(Ordering::SeqCst) == RESET {
                    drop(client);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                let epoch = p.epoch.load(Ordering::SeqCst);
                tokio::spawn(pump(cr, uw, p.clone(), epoch));
                tokio::spawn(pump(ur, cw, p.clone(), epoch));
            }
        });
        proxy
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Forward everything at once.
    pub fn pass(&self) {
        self.delay_ms.store(0, Ordering::SeqCst);
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// Forward everything after `delay`.
    pub fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        self.mode.store(PASS, Ordering::SeqCst);
    }

    /// Keep connections open but forward nothing.
    pub fn blackhole(&self) {
        self.mode.store(BLACKHOLE, Ordering::SeqCst);
    }

    /// Close every connection and refuse new ones until `pass`.
    pub fn reset(&self) {
        self.mode.store(RESET, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    proxy: FaultProxy,
    epoch: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = closed(&proxy, epoch) => return,
        };
        loop {
            if proxy.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
            match proxy.mode.load(Ordering::SeqCst) {
                BLACKHOLE => tokio::time::sleep(Duration::from_millis(5)).await,
                RESET => return,
                _ => break,
            }
        }
        let delay = proxy.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            // Bytes still in flight when the proxy is reset are lost, as
            // on a link to a host that crashed.
            if proxy.epoch.load(Ordering::SeqCst) != epoch {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resolves once the proxy has been reset since the connection opened.
async fn closed(proxy: &FaultProxy, epoch: u64) {
    while proxy.epoch.load(Ordering::SeqCst) == epoch {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
