//! Kafka backend of the log, through rdkafka (bundled librdkafka).
//!
//! Producer: `enable.idempotence=true`, `acks=all`; thermo chooses each record's partition from
//! its key (the canonical metric key) with `crate::log::partition_of`, so one series always lands
//! in one partition. Each record carries thermo's clock as its timestamp (the aggregator's lateness rule
//! compares it with when the hour was rolled up). Records never expire inside librdkafka (`message.timeout.ms=0`): `send_all` gives up
//! waiting after its own timeout (the caller answers 503 and the sender retries), while librdkafka
//! keeps the queued records and delivers them when the broker is back. This matters: a record that
//! times out inside librdkafka makes it bump the idempotent producer's epoch, and tansu 0.6 loses
//! its storage engine (a panic: "more or less than one row") when it sees that epoch after a
//! restart. A record delivered both from the queue and from the sender's retry is merged once
//! downstream (its contribution id), so the duplicate is harmless. The queue is bounded
//! (`queue.buffering.max.*`); when it is full `send_all` fails at once. Consumer: a group member with `enable.auto.commit=false`; offsets are committed by the
//! aggregator only after the hot store holds the data.

use crate::log::{partition_of, LogConsumer, LogProducer, LogRecord};
use crate::StoreError;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// An idempotent Kafka producer for one topic.
pub struct KafkaProducer {
    producer: FutureProducer,
    topic: String,
    ack_timeout: Duration,
    /// The topic's partition count as last read (`check`); 0 until then.
    partitions: AtomicU32,
}

fn kafka_err(e: KafkaError) -> StoreError {
    StoreError::Unavailable {
        backend: "kafka",
        detail: e.to_string(),
    }
}

impl KafkaProducer {
    /// `ack_timeout` bounds how long `send_all` waits for the acknowledgements.
    pub fn new(brokers: &str, topic: &str, ack_timeout: Duration) -> Result<Self, StoreError> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.messages", "500000")
            .set("queue.buffering.max.kbytes", "262144")
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .map_err(|e| StoreError::Invalid(format!("kafka producer config: {e}")))?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
            ack_timeout,
            partitions: AtomicU32::new(0),
        })
    }

    /// Whether a broker answers metadata for the topic within `timeout` (readiness).
    /// The topic's partition count, read from the broker and kept for placing records (every
    /// [`LogProducer::send_all`] needs one read first).
    pub fn check(&self, timeout: Duration) -> Result<usize, StoreError> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)
            .map_err(kafka_err)?;
        let parts = md
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map_or(0, |t| t.partitions().len());
        if parts == 0 {
            return Err(StoreError::Invalid(format!(
                "topic {} has no partitions (create it first)",
                self.topic
            )));
        }
        let n = u32::try_from(parts).unwrap_or(u32::MAX);
        let before = self.partitions.swap(n, Ordering::Relaxed);
        if before != 0 && before != n {
            tracing::warn!(
                topic = %self.topic,
                before,
                now = n,
                "the topic's partition count changed: series move to other partitions from now on"
            );
        }
        Ok(parts)
    }

    /// Waits up to `timeout` for queued records to be delivered (shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

impl LogProducer for KafkaProducer {
    async fn send_all(&self, records: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let partitions = self.partitions.load(Ordering::Relaxed);
        if partitions == 0 {
            return Err(StoreError::Unavailable {
                backend: "kafka",
                detail: format!("topic {}'s partitions not read yet", self.topic),
            });
        }
        let mut pending = Vec::with_capacity(records.len());
        // thermo's clock, not librdkafka's: the aggregator compares it with when an hour was
        // rolled up (the lateness rule), which thermo's clock recorded.
        let now_ms = thermo_core::window::now_ms();
        for (key, value) in &records {
            let rec = FutureRecord::to(&self.topic)
                .partition(partition_of(key.as_bytes(), partitions))
                .key(key)
                .payload(value)
                .timestamp(now_ms);
            match self.producer.send_result(rec) {
                Ok(f) => pending.push(f),
                Err((e, _)) => return Err(kafka_err(e)),
            }
        }
        let deadline = Instant::now() + self.ack_timeout;
        let mut first_err = None;
        for f in pending {
            let Ok(delivered) = tokio::time::timeout_at(deadline, f).await else {
                return Err(StoreError::Unavailable {
                    backend: "kafka",
                    detail: format!("not acknowledged within {:?}", self.ack_timeout),
                });
            };
            match delivered {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    first_err.get_or_insert(kafka_err(e));
                }
                Err(_) => {
                    first_err.get_or_insert(StoreError::Unavailable {
                        backend: "kafka",
                        detail: "delivery cancelled".into(),
                    });
                }
            }
        }
        match first_err {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// A Kafka consumer-group member for one topic.
pub struct KafkaConsumer {
    consumer: StreamConsumer,
    topic: String,
}

impl KafkaConsumer {
    /// `instance`: a `group.instance.id` (static membership), or none; `session`: the group's
    /// `session.timeout.ms`.
    pub fn new(
        brokers: &str,
        topic: &str,
        group: &str,
        instance: Option<&str>,
        session: Duration,
    ) -> Result<Self, StoreError> {
        let session_ms = session.as_millis().max(1_000);
        let mut config = ClientConfig::new();
        if let Some(id) = instance {
            config.set("group.instance.id", id);
        }
        let consumer: StreamConsumer = config
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", "1000")
            // Also the rebalance timeout: how long the group waits for members to rejoin; at
            // least the session timeout (librdkafka requires it).
            .set("max.poll.interval.ms", session_ms.max(20_000).to_string())
            .set("reconnect.backoff.max.ms", "1000")
            .create()
            .map_err(|e| StoreError::Invalid(format!("kafka consumer config: {e}")))?;
        consumer.subscribe(&[topic]).map_err(kafka_err)?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
        })
    }
}

impl LogConsumer for KafkaConsumer {
    fn topic(&self) -> &str {
        &self.topic
    }

    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<LogRecord>, StoreError> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while out.len() < max {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // After the first record, only take what is already buffered.
            let budget = if out.is_empty() {
                remaining
            } else {
                remaining.min(Duration::from_millis(5))
            };
            match tokio::time::timeout(budget, self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    if out.is_empty() {
                        return Err(kafka_err(e));
                    }
                    break;
                }
                Ok(Ok(m)) => out.push(LogRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
                    value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    produced_ms: m.timestamp().to_millis(),
                }),
            }
        }
        Ok(out)
    }

    fn commit(&mut self, offsets: &[(i32, i64)]) -> Result<(), StoreError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for (p, next) in offsets {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*next))
                .map_err(kafka_err)?;
        }
        self.consumer
            .commit(&tpl, CommitMode::Async)
            .map_err(kafka_err)
    }

    fn assignment(&self) -> Vec<i32> {
        self.consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default()
    }

    fn partition_count(&mut self) -> Result<u32, StoreError> {
        let fetch = || {
            self.consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(5))
                .map_err(kafka_err)
        };
        // A network round trip: off the async thread when on a multi-threaded runtime.
        let meta = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(fetch),
            _ => fetch(),
        }?;
        let n = meta
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map_or(0, |t| t.partitions().len());
        match u32::try_from(n) {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(StoreError::Unavailable {
                backend: "kafka",
                detail: format!("topic {} has no partitions yet", self.topic),
            }),
        }
    }

    fn seek(&mut self, partition: i32, offset: i64) -> Result<(), StoreError> {
        let to = if offset < 0 {
            Offset::Beginning
        } else {
            Offset::Offset(offset)
        };
        self.consumer
            .seek(&self.topic, partition, to, Duration::from_secs(5))
            .map_err(kafka_err)
    }
}
