//! Instructions per call, for cachegrind (load-independent, unlike time):
//! runs `N` calls through one contender after a warm-up. `scripts/instructions`
//! runs it under `valgrind --tool=cachegrind` with 0 and with N calls and
//! prints the difference per call for every contender.
//!
//! ```text
//! cargo run --release --example instructions -- ours 100000
//! ```

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, DistributedCircuitBreakerLayer, Force, KeyExtractor, MemoryStore, Policy,
};
use tower::{Layer, Service, ServiceExt};

#[derive(Clone, Copy)]
struct Plain;

impl Service<u64> for Plain {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

/// recloser behind the tower interface, as a user would wrap it.
#[derive(Clone)]
struct Recloser {
    inner: Plain,
    recloser: recloser::AsyncRecloser,
}

impl Service<u64> for Recloser {
    type Response = u64;
    type Error = recloser::Error<Infallible>;
    type Future = recloser::RecloserFuture<Ready<Result<u64, Infallible>>, recloser::AnyError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(recloser::Error::Inner)
    }

    fn call(&mut self, request: u64) -> Self::Future {
        self.recloser.call(self.inner.call(request))
    }
}

#[derive(Clone)]
struct TenKeys;

const KEYS: [&str; 10] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];

impl KeyExtractor<u64> for TenKeys {
    fn extract<'r>(&self, request: &'r u64) -> Option<std::borrow::Cow<'r, str>> {
        Some(std::borrow::Cow::Borrowed(KEYS[(*request % 10) as usize]))
    }
}

async fn drive<S>(mut svc: S, calls: u64)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..1_000 {
        let ready = svc.ready().await.unwrap();
        black_box(ready.call(black_box(i)).await.is_ok());
    }
    for i in 0..calls {
        let ready = svc.ready().await.unwrap();
        black_box(ready.call(black_box(i)).await.is_ok());
    }
}

fn layer(name: &str) -> DistributedCircuitBreakerLayer {
    DistributedCircuitBreakerLayer::new(name, Policy::default(), MemoryStore::new()).unwrap()
}

fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let contender = args.next().unwrap_or_else(|| "ours".to_owned());
    let calls: u64 = args.next().map_or(Ok(100_000), |n| n.parse())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match contender.as_str() {
            "plain" => drive(Plain, calls).await,
            "ours" => drive(layer("ours").layer(Plain), calls).await,
            "ours-keyed" => drive(layer("keyed").key_by(TenKeys).layer(Plain), calls).await,
            "ours-timeout" => {
                let timed = layer("timed").call_timeout(Duration::from_secs(10));
                drive(timed.layer(Plain), calls).await
            }
            "ours-rejected" => {
                let open = layer("open");
                open.breaker().force(Force::Open(None)).await.unwrap();
                drive(open.layer(Plain), calls).await
            }
            "recloser" => {
                let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
                drive(
                    Recloser {
                        inner: Plain,
                        recloser,
                    },
                    calls,
                )
                .await
            }
            "recloser-rejected" => {
                let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());
                for _ in 0..1_000 {
                    let _ = recloser.call(ready(Err::<(), ()>(()))).await;
                }
                drive(
                    Recloser {
                        inner: Plain,
                        recloser,
                    },
                    calls,
                )
                .await
            }
            other => panic!("unknown contender {other}"),
        }
    });
    Ok(())
}
