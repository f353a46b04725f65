//! The JSON form of an ingest batch, for programs that push without the agent.
//!
//! ```json
//! {"idempotency_key": "deploy-bot:42",
//!  "series": [
//!    {"metric": "http.requests", "tags": {"route": "/a"}, "time": 1764460800,
//!     "type": "counter", "value": 12},
//!    {"metric": "queue.depth", "time": 1764460800, "type": "gauge", "value": 7},
//!    {"metric": "http.latency", "time": 1764460800, "type": "histogram", "values": [12.5, 40]},
//!    {"metric": "users", "time": 1764460800, "type": "set", "members": ["alice", "bob"]}]}
//! ```
//!
//! `time` is unix seconds and is floored to its minute. A counter's `value` adds to the sum and
//! counts one sample (`samples` overrides that). A gauge sets last, min and max (or give `min`,
//! `max`, `last` explicitly). Every refusal names the field, such as `series[3].values[0]`.

use crate::aggregate::{Aggregate, Counter, DistinctSet, Gauge, Hist, MAX_SET_MEMBERS};
use crate::codec::Item;
use crate::window::minute_start;
use serde::Deserialize;
use std::collections::BTreeMap;

/// Most values in one histogram entry or members in one set entry.
pub const MAX_VALUES_PER_SERIES: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonBatch {
    #[serde(default)]
    pub idempotency_key: Option<String>,
    pub series: Vec<JsonSeries>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonSeries {
    pub metric: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub time: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub samples: Option<u64>,
    #[serde(default)]
    pub values: Option<Vec<f64>>,
    #[serde(default)]
    pub members: Option<Vec<String>>,
    #[serde(default)]
    pub last: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// A refused JSON entry: the field path and the problem.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct JsonError {
    pub field: String,
    pub problem: String,
}

fn bad(field: String, problem: impl Into<String>) -> JsonError {
    JsonError {
        field,
        problem: problem.into(),
    }
}

fn finite(v: f64, field: String) -> Result<f64, JsonError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(bad(field, "must be a finite number"))
    }
}

impl JsonSeries {
    /// Converts entry `i` into a batch item (names and tags are validated later, with the tenant).
    pub fn into_item(self, i: usize, now_ms: i64) -> Result<Item, JsonError> {
        let f = |name: &str| format!("series[{i}].{name}");
        let agg = match self.kind.as_str() {
            "counter" => {
                let v = self
                    .value
                    .ok_or_else(|| bad(f("value"), "required for a counter"))?;
                Aggregate::Counter(Counter {
                    sum: finite(v, f("value"))?,
                    samples: self.samples.unwrap_or(1),
                })
            }
            "gauge" => {
                let last = self
                    .last
                    .or(self.value)
                    .ok_or_else(|| bad(f("value"), "required for a gauge"))?;
                let last = finite(last, f("value"))?;
                let min = finite(self.min.unwrap_or(last), f("min"))?;
                let max = finite(self.max.unwrap_or(last), f("max"))?;
                if min > last || last > max {
                    return Err(bad(f("min"), "must satisfy min <= last <= max"));
                }
                Aggregate::Gauge(Gauge {
                    last,
                    last_ms: now_ms,
                    min,
                    max,
                })
            }
            "histogram" => {
                let values = self
                    .values
                    .ok_or_else(|| bad(f("values"), "required for a histogram"))?;
                if values.is_empty() || values.len() > MAX_VALUES_PER_SERIES {
                    return Err(bad(
                        f("values"),
                        format!("must hold 1 to {MAX_VALUES_PER_SERIES} values"),
                    ));
                }
                let mut h = Hist::new();
                for (j, v) in values.into_iter().enumerate() {
                    h.record(finite(v, f(&format!("values[{j}]")))?, 1);
                }
                Aggregate::Histogram(h)
            }
            "set" => {
                let members = self
                    .members
                    .ok_or_else(|| bad(f("members"), "required for a set"))?;
                if members.is_empty() || members.len() > MAX_SET_MEMBERS {
                    return Err(bad(
                        f("members"),
                        format!("must hold 1 to {MAX_SET_MEMBERS} members"),
                    ));
                }
                let mut s = DistinctSet::default();
                for m in &members {
                    s.insert(m);
                }
                Aggregate::Set(s)
            }
            other => {
                return Err(bad(
                    f("type"),
                    format!("unknown type {other:?}; expected counter, gauge, histogram or set"),
                ))
            }
        };
        Ok(Item {
            name: self.metric,
            tags: self.tags.into_iter().collect(),
            minute: minute_start(self.time),
            agg,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_each_type_and_names_bad_fields() {
        let b: JsonBatch = serde_json::from_str(
            r#"{"series":[
              {"metric":"a","time":125,"type":"counter","value":3},
              {"metric":"b","time":60,"type":"histogram","values":[1,2,3]},
              {"metric":"c","time":60,"type":"histogram","values":[]},
              {"metric":"d","time":60,"type":"gauge"}]}"#,
        )
        .unwrap();
        let r: Vec<_> = b
            .series
            .into_iter()
            .enumerate()
            .map(|(i, s)| s.into_item(i, 0))
            .collect();
        let a = r[0].as_ref().unwrap();
        assert_eq!(a.minute, 120);
        assert_eq!(
            a.agg,
            Aggregate::Counter(Counter {
                sum: 3.0,
                samples: 1
            })
        );
        assert!(r[1].is_ok());
        assert_eq!(r[2].as_ref().unwrap_err().field, "series[2].values");
        assert_eq!(r[3].as_ref().unwrap_err().field, "series[3].value");
    }
}
