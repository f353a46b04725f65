//! thermo places records itself: through a real broker (tansu), every record the Kafka backend
//! produces lands in `partition_of(key, partitions)`, the partition the embedded log uses too.

use crate::support::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use thermo_store::kafka::{KafkaConsumer, KafkaProducer};
use thermo_store::log::{partition_of, LogConsumer, LogProducer};

#[test]
fn kafka_records_land_in_the_partition_thermo_computes() {
    let dir = TempDir::new("kafka-partitions");
    let broker = Broker::start(dir.path());
    broker.create_topic("placed", 6);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // rdkafka's clients need a Tokio runtime to be created in.
    let _in_runtime = rt.enter();
    let producer =
        KafkaProducer::new(&broker.addr(), "placed", Duration::from_secs(30)).expect("producer");
    // Before the topic's partitions are read, nothing is sent (the partitioner answers 503).
    let err = rt
        .block_on(producer.send_all(vec![("k".into(), b"v".to_vec())]))
        .expect_err("no partition count yet");
    assert!(err.to_string().contains("partitions not read yet"), "{err}");
    let mut parts = 0;
    wait_until("the topic's metadata", Duration::from_secs(30), || {
        parts = producer.check(Duration::from_secs(2)).unwrap_or(0);
        parts > 0
    });
    assert_eq!(parts, 6);

    let keys: Vec<String> = (0..300)
        .map(|i| format!("acme/http.requests{{host=h{i}}}"))
        .collect();
    let records = keys
        .iter()
        .map(|k| (k.clone(), k.as_bytes().to_vec()))
        .collect();
    rt.block_on(producer.send_all(records))
        .expect("acknowledged");

    let mut consumer = KafkaConsumer::new(
        &broker.addr(),
        "placed",
        "placement-check",
        None,
        Duration::from_secs(6),
    )
    .expect("consumer");
    let mut placed: BTreeMap<String, i32> = BTreeMap::new();
    let started = Instant::now();
    while placed.len() < keys.len() && started.elapsed() < Duration::from_secs(90) {
        for r in rt
            .block_on(consumer.poll(500, Duration::from_secs(1)))
            .expect("poll")
        {
            let key = String::from_utf8(r.key).expect("utf-8 key");
            assert!(placed.insert(key, r.partition).is_none(), "a record twice");
        }
    }
    assert_eq!(placed.len(), keys.len(), "every record consumed");
    for (key, partition) in &placed {
        assert_eq!(*partition, partition_of(key.as_bytes(), 6), "{key}");
    }
    let used: std::collections::BTreeSet<i32> = placed.values().copied().collect();
    assert_eq!(used.len(), 6, "300 series spread over every partition");
}
