//! The cold store contract on S3: the conformance suite every backend passes
//! (`thermo_store::cold_suite`, also run on the local directory in the store crate's unit tests),
//! here against moto_server, with the S3 backend the aggregator and the read service use
//! (ranged GETs and tails included).

use crate::support::s3::{Moto, ACCESS_KEY, REGION, SECRET_KEY};
use crate::support::TempDir;
use std::time::Duration;
use thermo_store::cold::ColdStore;
use thermo_store::s3::{S3Cold, S3Settings};

#[test]
fn s3_passes_the_cold_store_suite() {
    let dir = TempDir::new("cold-store");
    let moto = Moto::start(dir.path());
    let store = S3Cold::new(&S3Settings {
        endpoint: moto.endpoint(),
        bucket: "suite".into(),
        region: REGION.into(),
        access_key: ACCESS_KEY.into(),
        secret_key: SECRET_KEY.into(),
        timeout: Duration::from_secs(10),
    })
    .creating_bucket(true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        store.ensure_bucket().await.expect("bucket");
        // Missing objects answer None before anything was written.
        assert_eq!(store.get("suite/none").await.expect("get"), None);
        thermo_store::cold_suite::run(&store, "suite").await;
    });
}
