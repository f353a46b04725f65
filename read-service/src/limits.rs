//! Read-side limits, applied to every query route (the native API and the Prometheus API) before
//! the query runs ([`limit`], a middleware):
//!
//! - **rate:** each tenant at most `query_rate_per_sec` queries a second (or its entry in
//!   `tenant_query_rate_limits`), with `query_rate_burst_secs` seconds of burst; above it 429 with
//!   `Retry-After` (a token bucket per tenant, [`thermo_runtime::rate`]);
//! - **concurrency:** at most `max_concurrent_queries` run at once; up to `max_queued_queries`
//!   more wait for a slot, each for at most `query_timeout_ms`; beyond the queue, 503 with
//!   `Retry-After: 1` at once, and a wait that times out is a 503 too.
//!
//! The bound on the samples one query touches (`max_samples`) is checked where they are read
//! ([`crate::stitch::Selector`]).

use crate::api::AppState;
use crate::error::ApiError;
use crate::prom::PromError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::IntGauge;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use thermo_runtime::rate::{RateLimits, Verdict};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits shared by every query of one read service.
pub struct QueryLimits {
    slots: Arc<Semaphore>,
    max_running: usize,
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
    wait: Duration,
    rates: RateLimits,
    running: IntGauge,
    queued: IntGauge,
}

/// A running query's slot; freed when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    running: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.dec();
    }
}

/// One query waiting for a slot; leaves the queue when dropped (also when the client went away).
struct Waiting {
    waiting: Arc<AtomicUsize>,
    queued: IntGauge,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.queued.dec();
    }
}

impl QueryLimits {
    /// `max_running` of 0 is raised to 1; `wait`: the longest a query waits for a slot.
    pub fn new(
        max_running: usize,
        max_waiting: usize,
        wait: Duration,
        rates: RateLimits,
        running: IntGauge,
        queued: IntGauge,
    ) -> Self {
        let max_running = max_running.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            slots: Arc::new(Semaphore::new(max_running)),
            max_running,
            waiting: Arc::new(AtomicUsize::new(0)),
            max_waiting,
            wait,
            rates,
            running,
            queued,
        }
    }

    /// Lets a query of `tenant` run: its tenant's rate first, then a slot, at once or after
    /// waiting in the queue.
    pub async fn enter(&self, tenant: &str) -> Result<Slot, ApiError> {
        match self.rates.check(tenant, 1) {
            Verdict::Allowed => {}
            Verdict::Wait(d) => {
                return Err(ApiError::RateLimited {
                    tenant: tenant.to_string(),
                    rate: self.rates.rate(tenant),
                    retry_after_secs: d.as_secs() + u64::from(d.subsec_nanos() > 0),
                })
            }
            // A bucket holds at least one second of a rate of at least 1: one query always fits.
            Verdict::TooBig { .. } => {
                return Err(ApiError::RateLimited {
                    tenant: tenant.to_string(),
                    rate: self.rates.rate(tenant),
                    retry_after_secs: 1,
                })
            }
        }
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => self.queue().await?,
        };
        self.running.inc();
        Ok(Slot {
            _permit: permit,
            running: self.running.clone(),
        })
    }

    /// Waits for a slot if the queue has room.
    async fn queue(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Overloaded(format!(
                "{} queries running and {} waiting (max_concurrent_queries, max_queued_queries)",
                self.max_running, self.max_waiting
            )));
        }
        self.queued.inc();
        let _waiting = Waiting {
            waiting: self.waiting.clone(),
            queued: self.queued.clone(),
        };
        match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(ApiError::Overloaded(format!(
                "no query slot within {} ms (max_concurrent_queries = {})",
                self.wait.as_millis(),
                self.max_running
            ))),
        }
    }
}

/// The middleware: a query runs only once [`QueryLimits::enter`] let it. A request without a
/// valid key goes on to its handler, which answers 401.
pub async fn limit<H, K, C>(
    State(st): State<Arc<AppState<H, K, C>>>,
    req: Request,
    next: Next,
) -> Response
where
    H: Send + Sync + 'static,
    K: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    let Ok(tenant) = st.tenant(req.headers()) else {
        return next.run(req).await;
    };
    match st.limits.enter(&tenant).await {
        Ok(slot) => {
            let answer = next.run(req).await;
            drop(slot);
            answer
        }
        Err(e) => {
            st.metrics.received.inc();
            st.count_answer(Some(e.status()));
            if req.uri().path().starts_with("/prometheus/") {
                PromError::from(e).into_response()
            } else {
                e.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicI64;

    fn limits(running: usize, waiting: usize, rate: u32, now: Arc<AtomicI64>) -> QueryLimits {
        let rates = RateLimits::new(
            rate,
            Default::default(),
            1,
            Arc::new(move || now.load(Ordering::SeqCst)),
        );
        QueryLimits::new(
            running,
            waiting,
            Duration::from_secs(30),
            rates,
            IntGauge::new("running", "r").unwrap(),
            IntGauge::new("queued", "q").unwrap(),
        )
    }

    #[tokio::test]
    async fn queries_beyond_the_slots_wait_and_beyond_the_queue_get_503() {
        let l = Arc::new(limits(1, 1, 0, Arc::new(AtomicI64::new(0))));
        let first = l.enter("a").await.unwrap();
        assert_eq!(l.running.get(), 1);
        let second = {
            let l = l.clone();
            tokio::spawn(async move { l.enter("b").await.map(|_slot| ()) })
        };
        for _ in 0..10_000 {
            if l.queued.get() == 1 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(l.queued.get(), 1, "the second query waits");
        let third = l.enter("c").await;
        assert!(
            matches!(third, Err(ApiError::Overloaded(_))),
            "the queue is full"
        );
        drop(first);
        second.await.unwrap().unwrap();
        assert_eq!((l.running.get(), l.queued.get()), (0, 0));
        drop(l.enter("d").await.unwrap());
    }

    /// Through the router: a rate-limited query is a 429 with `Retry-After` in both APIs (the
    /// Prometheus one in its error shape), and a query touching more than `max_samples` is a 400
    /// naming `from` (422 `execution` in the Prometheus API).
    #[tokio::test]
    async fn both_apis_answer_the_query_limits() {
        use crate::api::{router, ColdSide};
        use crate::ReadConfig;
        use axum::body::Body;
        use http_body_util::BodyExt;
        use thermo_core::aggregate::{Aggregate, Counter};
        use thermo_core::codec::HotCell;
        use thermo_core::key::MetricKey;
        use thermo_runtime::telemetry::SelfMetrics;
        use thermo_store::cold::LocalDirCold;
        use thermo_store::mem_catalog::MemCatalog;
        use thermo_store::mem_hot::MemHot;
        use tower::ServiceExt;

        let now_ms = Arc::new(AtomicI64::new(thermo_core::window::now_ms()));
        let base = thermo_core::window::minute_start(now_ms.load(Ordering::SeqCst) / 1000) - 600;
        let hot = MemHot::new();
        for host in ["a", "b"] {
            let key = MetricKey::new("default", "req", vec![("host".into(), host.into())]).unwrap();
            for m in 0..3 {
                let agg = Aggregate::Counter(Counter {
                    sum: 1.0,
                    samples: 1,
                });
                hot.insert(
                    key.clone(),
                    base + 60 * m,
                    HotCell {
                        contributors: vec![(1, 1)],
                        agg,
                    },
                );
            }
        }
        let cfg = ReadConfig {
            query_rate_per_sec: 2,
            query_rate_burst_secs: 1,
            max_samples: 5,
            ..ReadConfig::default()
        };
        let clock = now_ms.clone();
        let app = router(AppState::with_clock(
            cfg,
            hot,
            None::<ColdSide<MemCatalog, LocalDirCold>>,
            SelfMetrics::new("read_service", "queries"),
            Arc::new(move || clock.load(Ordering::SeqCst)),
        ));
        let get = |uri: String| {
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(axum::http::Request::get(uri).body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let retry = resp
                    .headers()
                    .get(axum::http::header::RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().to_string());
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                (status, retry, body)
            }
        };
        let (from, to) = (base, base + 180);
        // 2 series × 3 minutes = 6 samples > 5; two minutes fit.
        let (s, _, body) = get(format!(
            "/api/v1/query?metric=req&from={from}&to={to}&step=60"
        ))
        .await;
        assert_eq!((s, body["param"].as_str()), (400, Some("from")), "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("max_samples"),
            "{body}"
        );
        let (s, _, body) = get(format!(
            "/prometheus/api/v1/query_range?query=req&start={}&end={}&step=60",
            from + 60,
            to
        ))
        .await;
        assert_eq!(
            (s, body["errorType"].as_str()),
            (422, Some("execution")),
            "{body}"
        );
        // The bucket (2 a second) is empty now: the next query waits a second.
        let (s, retry, body) = get(format!(
            "/api/v1/query?metric=req&from={from}&to={}",
            from + 120
        ))
        .await;
        assert_eq!((s, retry.as_deref()), (429, Some("1")), "{body}");
        now_ms.fetch_add(1_000, Ordering::SeqCst);
        let (s, _, body) = get(format!(
            "/api/v1/query?metric=req&from={from}&to={}&step=60",
            from + 120
        ))
        .await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(
            body["series"][0]["points"][0][1].as_f64(),
            Some(2.0),
            "{body}"
        );
        let (s, _, _) = get(format!(
            "/api/v1/query?metric=req&from={from}&to={}",
            from + 120
        ))
        .await;
        assert_eq!(s, 200);
        let (s, retry, body) = get("/prometheus/api/v1/labels".to_string()).await;
        assert_eq!((s, retry.as_deref()), (429, Some("1")), "{body}");
        assert_eq!(
            (body["status"].as_str(), body["errorType"].as_str()),
            (Some("error"), Some("unavailable"))
        );
    }

    #[tokio::test]
    async fn a_tenant_over_its_query_rate_gets_429_and_others_do_not() {
        let now = Arc::new(AtomicI64::new(1_000_000));
        let l = limits(8, 8, 2, now.clone());
        drop(l.enter("a").await.unwrap());
        drop(l.enter("a").await.unwrap());
        match l.enter("a").await {
            Err(ApiError::RateLimited {
                retry_after_secs, ..
            }) => assert_eq!(retry_after_secs, 1),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a third query within the second"),
        }
        drop(l.enter("b").await.unwrap());
        now.fetch_add(500, Ordering::SeqCst);
        drop(l.enter("a").await.unwrap());
        assert_eq!(l.running.get(), 0);
    }
}
