//! Instructions per call, for cachegrind (load-independent, unlike time):
//! runs `N` calls through one contender after a warm-up. `scripts/instructions`
//! runs it under `valgrind --tool=cachegrind` with 0 and with N calls and
//! prints the difference per call for every contender.
//!
//! ```text
//! cargo run --release --example instructions -- ours 100000
//! ```

use std::future::ready;
use std::hint::black_box;
use std::time::Duration;

use distributed_circuit_breaker::{
    BoxError, DistributedCircuitBreakerLayer, Force, MemoryStore, Policy,
};
use tower::{Layer, Service, ServiceExt};

#[path = "../benches/support/contenders.rs"]
mod contenders;
use contenders::{Plain, RecloserService as Recloser, TenKeys};

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
