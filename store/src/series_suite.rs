//! The conformance suite of the [`SeriesRegistry`] contract, run on every backend: memory in this
//! crate's unit tests, Redis in `tests/e2e/series_registry.rs`.
//!
//! [`run`] panics with what differed, like an assertion in a test.

use crate::series_registry::{Admitted, SeriesLimit, SeriesLimits, SeriesRegistry};

/// The start of an hour, so that the checks choose which hour each call falls in.
const HOUR: i64 = 500_000 * 3600;
const WINDOW: i64 = 600;

fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}/req{{s={i}}}")).collect()
}

fn limits(max_active: u64, max_new_per_hour: u64) -> SeriesLimits {
    SeriesLimits {
        max_active,
        max_new_per_hour,
    }
}

/// Runs every check on `reg` with tenants named `<prefix>-...` (which must be unused).
pub async fn run<R: SeriesRegistry>(reg: &R, prefix: &str) {
    let admit = |tenant: &str, series: &[String], l: SeriesLimits, now: i64| {
        let tenant = format!("{prefix}-{tenant}");
        let series = series.to_vec();
        async move { reg.admit(&tenant, &series, l, now, WINDOW).await.unwrap() }
    };
    let ok = |active: u64, new_this_hour: u64| Admitted {
        refused: vec![],
        limit: None,
        active,
        new_this_hour,
    };

    // No limits: everything admitted and counted.
    let s = names("free", 0..3);
    assert_eq!(admit("free", &s, limits(0, 0), HOUR + 10).await, ok(3, 3));
    assert_eq!(admit("free", &s, limits(0, 0), HOUR + 20).await, ok(3, 3));

    // Active series: a known series always flows, new ones stop at the limit, in order.
    let s = names("act", 0..8);
    assert_eq!(
        admit("act", &s[..4], limits(5, 0), HOUR + 10).await,
        ok(4, 4)
    );
    let got = admit(
        "act",
        &[&s[0..1], &s[4..7]].concat(),
        limits(5, 0),
        HOUR + 20,
    )
    .await;
    assert_eq!(
        got,
        Admitted {
            refused: vec![2, 3],
            limit: Some(SeriesLimit::MaxActiveSeries),
            active: 5,
            new_this_hour: 5,
        }
    );
    assert_eq!(
        admit("act", &s[..5], limits(5, 0), HOUR + 400).await,
        ok(5, 5)
    );
    // Another tenant is not limited by this one's series.
    assert_eq!(
        admit("other", &s, limits(5, 0), HOUR + 30).await.refused,
        vec![5, 6, 7]
    );
    // Series age out of the window: s0..s4 were last seen at +400; at +1001 (cutoff +401) they
    // are gone and new series fit again (the hour's new-series count goes on).
    let got = admit("act", &s[5..8], limits(5, 0), HOUR + 1001).await;
    assert_eq!(got, ok(3, 8));
    // A series seen at the cutoff itself is still active.
    assert_eq!(
        admit("act", &s[5..6], limits(5, 0), HOUR + 1601).await,
        ok(3, 8)
    );

    // New series per hour: refused past the count, admitted again the next hour.
    let s = names("new", 0..6);
    let got = admit("new", &s[..4], limits(0, 3), HOUR + 10).await;
    assert_eq!(
        got,
        Admitted {
            refused: vec![3],
            limit: Some(SeriesLimit::MaxNewSeriesPerHour),
            active: 3,
            new_this_hour: 3,
        }
    );
    assert_eq!(
        admit("new", &s[..3], limits(0, 3), HOUR + 20).await,
        ok(3, 3)
    );
    // The next hour (s0..s2, last seen at +20, have aged out too).
    assert_eq!(
        admit("new", &s[3..5], limits(0, 3), HOUR + 3600).await,
        ok(2, 2)
    );
    // Both limits reached: the active one is named.
    let got = admit("new", &s[5..6], limits(2, 2), HOUR + 3610).await;
    assert_eq!(got.limit, Some(SeriesLimit::MaxActiveSeries));
    assert_eq!(got.refused, vec![0]);

    // A large request: exactly the series past the limit are refused.
    let s = names("large", 0..5_000);
    let got = admit("large", &s, limits(4_500, 0), HOUR + 10).await;
    assert_eq!(got.refused, (4_500..5_000).collect::<Vec<_>>());
    assert_eq!((got.active, got.new_this_hour), (4_500, 4_500));

    // Concurrent requests never admit more than the limit between them.
    let batches: Vec<Vec<String>> = (0..8)
        .map(|b| names("race", b * 100..b * 100 + 100))
        .collect();
    let calls = batches
        .iter()
        .map(|b| admit("race", b, limits(250, 0), HOUR + 10));
    let results = futures_util::future::join_all(calls).await;
    let admitted: usize = results.iter().map(|r| 100 - r.refused.len()).sum();
    assert_eq!(admitted, 250, "{results:?}");
    let last = admit("race", &names("race", 0..0), limits(250, 0), HOUR + 20).await;
    assert_eq!(last, ok(250, 250));
}
