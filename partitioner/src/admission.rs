//! Load shedding: a bound on the ingest requests handled at once and on the bytes they hold.
//!
//! A request is admitted before its body is read: it takes one of `max_in_flight_requests` slots
//! and reserves its `Content-Length` (`max_body_bytes` when no length is given) from
//! `max_in_flight_bytes`. When either is used up the answer is 503 with `Retry-After` at once, so
//! an overload costs a header parse per request, never a body, and memory stays bounded whatever
//! the load. Once the body is read, the request reserves what it holds beyond that: the body after
//! gzip, then its records, which wait in memory for Kafka's acknowledgement; if they do not fit,
//! 503 as well (nothing was produced). Everything is released when the answer is sent.
//!
//! A request that alone needs more than `max_in_flight_bytes` could never pass: 413 naming it.
//!
//! Bytes are reserved in KiB (rounded up), the unit of the semaphore's permits.

use crate::error::IngestError;
use prometheus::IntGauge;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The admission state shared by every request of one partitioner.
pub struct Admission {
    requests: Arc<Semaphore>,
    kib: Arc<Semaphore>,
    max_requests: usize,
    max_kib: u32,
    in_flight_requests: IntGauge,
    in_flight_bytes: IntGauge,
}

/// What an admitted request holds; released when dropped.
pub struct Ticket {
    _request: OwnedSemaphorePermit,
    kib: OwnedSemaphorePermit,
    kib_pool: Arc<Semaphore>,
    max_kib: u32,
    in_flight_requests: IntGauge,
    in_flight_bytes: IntGauge,
}

fn kib_of(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

impl Admission {
    /// `max_requests` and `max_bytes` of 0 are raised to 1 request and 1 KiB.
    pub fn new(
        max_requests: usize,
        max_bytes: u64,
        in_flight_requests: IntGauge,
        in_flight_bytes: IntGauge,
    ) -> Self {
        let max_requests = max_requests.clamp(1, Semaphore::MAX_PERMITS);
        let max_kib = u32::try_from(kib_of(max_bytes).max(1)).unwrap_or(u32::MAX);
        Self {
            requests: Arc::new(Semaphore::new(max_requests)),
            kib: Arc::new(Semaphore::new(max_kib as usize)),
            max_requests,
            max_kib,
            in_flight_requests,
            in_flight_bytes,
        }
    }

    /// Admits a request that will hold `bytes` (its body as sent), or refuses it: 503 when the
    /// partitioner is full, 413 when `bytes` alone exceed the bound.
    pub fn admit(&self, bytes: u64) -> Result<Ticket, IngestError> {
        let request = match self.requests.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                return Err(IngestError::Overloaded(format!(
                    "{} requests in flight (max_in_flight_requests)",
                    self.max_requests
                )))
            }
        };
        let kib = acquire_kib(&self.kib, self.max_kib, bytes)?;
        self.in_flight_requests.inc();
        self.in_flight_bytes.add(kib.num_permits() as i64 * 1024);
        Ok(Ticket {
            _request: request,
            kib,
            kib_pool: self.kib.clone(),
            max_kib: self.max_kib,
            in_flight_requests: self.in_flight_requests.clone(),
            in_flight_bytes: self.in_flight_bytes.clone(),
        })
    }
}

/// Takes `bytes` (in KiB) from `pool` without waiting.
fn acquire_kib(
    pool: &Arc<Semaphore>,
    max_kib: u32,
    bytes: u64,
) -> Result<OwnedSemaphorePermit, IngestError> {
    let want = kib_of(bytes);
    let want = u32::try_from(want)
        .ok()
        .filter(|w| *w <= max_kib)
        .ok_or_else(|| {
            IngestError::TooLarge(format!(
                "request holds {bytes} bytes, more than max_in_flight_bytes = {}",
                u64::from(max_kib) * 1024
            ))
        })?;
    pool.clone().try_acquire_many_owned(want).map_err(|_| {
        IngestError::Overloaded(format!(
            "{} KiB of requests in flight (max_in_flight_bytes)",
            max_kib
        ))
    })
}

impl Ticket {
    /// Reserves `bytes` more (the decoded body, the records), or refuses: 503 when the
    /// partitioner is full, 413 when the request alone would exceed the bound.
    pub fn reserve(&mut self, bytes: u64) -> Result<(), IngestError> {
        let held = self.kib.num_permits() as u64;
        if held + kib_of(bytes) > u64::from(self.max_kib) {
            return Err(IngestError::TooLarge(format!(
                "request holds {} bytes, more than max_in_flight_bytes = {}",
                held * 1024 + bytes,
                u64::from(self.max_kib) * 1024
            )));
        }
        let more = acquire_kib(&self.kib_pool, self.max_kib, bytes)?;
        self.in_flight_bytes.add(more.num_permits() as i64 * 1024);
        self.kib.merge(more);
        Ok(())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.in_flight_requests.dec();
        self.in_flight_bytes
            .sub(self.kib.num_permits() as i64 * 1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(requests: usize, bytes: u64) -> (Admission, IntGauge, IntGauge) {
        let r = IntGauge::new("r", "r").unwrap();
        let b = IntGauge::new("b", "b").unwrap();
        (Admission::new(requests, bytes, r.clone(), b.clone()), r, b)
    }

    #[test]
    fn requests_and_bytes_are_bounded_and_released() {
        let (a, r, b) = admission(2, 10 * 1024);
        let t1 = a.admit(4 * 1024).unwrap();
        let mut t2 = a.admit(1).unwrap();
        assert_eq!((r.get(), b.get()), (2, 5 * 1024));
        // A third request: no slot.
        assert!(matches!(a.admit(1), Err(IngestError::Overloaded(_))));
        // Bytes: 5 KiB held, 5 free; 6 more do not fit now, 11 never.
        assert!(matches!(
            t2.reserve(6 * 1024),
            Err(IngestError::Overloaded(_))
        ));
        assert!(matches!(
            t2.reserve(10 * 1024),
            Err(IngestError::TooLarge(_))
        ));
        t2.reserve(5 * 1024 - 1).unwrap();
        assert_eq!(b.get(), 10 * 1024);
        drop(t1);
        assert_eq!((r.get(), b.get()), (1, 6 * 1024));
        drop(t2);
        assert_eq!((r.get(), b.get()), (0, 0));
        // Everything is free again; a body larger than the bound is 413 at admission.
        let _t = a.admit(10 * 1024).unwrap();
        drop(_t);
        assert!(matches!(
            a.admit(10 * 1024 + 1),
            Err(IngestError::TooLarge(_))
        ));
        assert_eq!((r.get(), b.get()), (0, 0));
    }
}
