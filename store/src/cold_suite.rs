//! The conformance suite of the [`ColdStore`] contract, run on every backend: the local directory
//! in this crate's unit tests, S3 (moto) in `tests/cold_store.rs`.
//!
//! [`run`] panics with what differed, like an assertion in a test.

use crate::cold::ColdStore;

/// Runs every check on `store` under `prefix` (which must hold no objects yet).
pub async fn run<C: ColdStore>(store: &C, prefix: &str) {
    let k = |name: &str| format!("{prefix}/{name}");
    assert_eq!(store.list(prefix).await.unwrap(), Vec::<String>::new());
    // put replaces whole; get answers the last body or None.
    store.put(&k("a/one"), b"1".to_vec()).await.unwrap();
    store
        .put(&k("a/one"), b"0123456789".to_vec())
        .await
        .unwrap();
    store.put(&k("b/two"), b"x".to_vec()).await.unwrap();
    store.put(&k("b/empty"), Vec::new()).await.unwrap();
    assert_eq!(
        store.get(&k("a/one")).await.unwrap(),
        Some(b"0123456789".to_vec())
    );
    assert_eq!(store.get(&k("b/empty")).await.unwrap(), Some(Vec::new()));
    assert_eq!(store.get(&k("none")).await.unwrap(), None);
    // list: every key under the prefix, sorted.
    assert_eq!(
        store.list(prefix).await.unwrap(),
        vec![k("a/one"), k("b/empty"), k("b/two")]
    );
    assert_eq!(
        store.list(&k("b/")).await.unwrap(),
        vec![k("b/empty"), k("b/two")]
    );
    // Ranges, clamped to the object.
    let one = k("a/one");
    let range = |s: u64, e: u64| store.get_range(&one, s, e);
    assert_eq!(range(2, 5).await.unwrap(), Some(b"234".to_vec()));
    assert_eq!(range(0, 10).await.unwrap(), Some(b"0123456789".to_vec()));
    assert_eq!(range(7, 100).await.unwrap(), Some(b"789".to_vec()));
    assert_eq!(range(4, 4).await.unwrap(), Some(Vec::new()));
    assert_eq!(range(12, 20).await.unwrap(), Some(Vec::new()));
    assert_eq!(store.get_range(&k("none"), 0, 4).await.unwrap(), None);
    // Several ranges at once: each as get_range answers it, in order.
    let ranges = vec![7..100, 2..5, 4..4, 0..10, 12..20];
    let mut each = Vec::new();
    for r in &ranges {
        each.push(range(r.start, r.end).await.unwrap().unwrap());
    }
    assert_eq!(
        store.get_ranges(&one, ranges.clone()).await.unwrap(),
        Some(each)
    );
    assert_eq!(store.get_ranges(&k("none"), ranges).await.unwrap(), None);
    // Tails, with the object's size.
    let tail = |n: u64| store.get_tail(&one, n);
    assert_eq!(tail(3).await.unwrap(), Some((b"789".to_vec(), 10)));
    assert_eq!(tail(10).await.unwrap(), Some((b"0123456789".to_vec(), 10)));
    assert_eq!(tail(64).await.unwrap(), Some((b"0123456789".to_vec(), 10)));
    assert_eq!(store.get_tail(&k("none"), 8).await.unwrap(), None);
    assert_eq!(
        store.get_tail(&k("b/empty"), 8).await.unwrap(),
        Some((Vec::new(), 0))
    );
    // delete: idempotent.
    store.delete(&k("a/one")).await.unwrap();
    store.delete(&k("a/one")).await.unwrap();
    assert_eq!(store.get(&k("a/one")).await.unwrap(), None);
    assert_eq!(
        store.list(prefix).await.unwrap(),
        vec![k("b/empty"), k("b/two")]
    );
    for key in store.list(prefix).await.unwrap() {
        store.delete(&key).await.unwrap();
    }
    assert_eq!(store.list(prefix).await.unwrap(), Vec::<String>::new());
}
