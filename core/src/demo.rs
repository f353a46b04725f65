//! Realistic demo traffic: StatsD lines as a few web services would send them.
//!
//! Three services (`web`, `api`, `worker`), each with endpoints; per request a counter
//! `http.requests` tagged `service`, `route`, `code` (mostly 200, some 404/500), a timer
//! `http.latency` with a long-tailed distribution (log-normal body, Pareto tail) and, now and
//! then, gauges (`queue.depth`, `memory.used`) and a set (`users.active`). Deterministic for a seed,
//! with a tiny xorshift generator, so tests and benchmarks see the same lines.

/// A seeded generator of demo lines.
pub struct DemoTraffic {
    rng: u64,
    tick: u64,
}

const ROUTES: [(&str, &str, f64, f64); 7] = [
    // service, route, share of requests, median latency ms
    ("web", "/", 0.30, 12.0),
    ("web", "/search", 0.15, 45.0),
    ("web", "/checkout", 0.05, 120.0),
    ("api", "/v1/orders", 0.20, 30.0),
    ("api", "/v1/users", 0.15, 18.0),
    ("worker", "email", 0.10, 250.0),
    ("worker", "report", 0.05, 900.0),
];

impl DemoTraffic {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: seed.max(1),
            tick: 0,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        // Box–Muller.
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    fn latency(&mut self, median: f64) -> f64 {
        let v = if self.unit() < 0.02 {
            // The tail: Pareto, alpha 1.2, from 4× the median.
            4.0 * median / self.unit().max(1e-9).powf(1.0 / 1.2)
        } else {
            median * (0.5 * self.normal()).exp()
        };
        (v.min(60_000.0) * 10.0).round() / 10.0
    }

    /// The lines of one request (1 to 3 lines).
    pub fn request(&mut self) -> Vec<String> {
        let mut pick = self.unit();
        let (service, route, _, median) = ROUTES
            .iter()
            .copied()
            .find(|(_, _, share, _)| {
                pick -= share;
                pick < 0.0
            })
            .unwrap_or(ROUTES[0]);
        let r = self.unit();
        let code = if r < 0.02 {
            500
        } else if r < 0.06 {
            404
        } else {
            200
        };
        let tags = format!("service:{service},route:{route},code:{code}");
        let mut lines = vec![
            format!("http.requests:1|c|#{tags}"),
            format!(
                "http.latency:{}|ms|#service:{service},route:{route}",
                self.latency(median)
            ),
        ];
        self.tick += 1;
        if self.tick.is_multiple_of(50) {
            let depth = (20.0 + 15.0 * self.normal()).max(0.0).round();
            lines.push(format!("queue.depth:{depth}|g|#service:worker"));
        }
        if self.tick.is_multiple_of(97) {
            let user = self.next_u64() % 500;
            lines.push(format!("users.active:u{user}|s|#service:{service}"));
        }
        if self.tick.is_multiple_of(200) {
            let mb = 300 + self.next_u64() % 200;
            lines.push(format!("memory.used:{mb}|g|#service:{service}"));
        }
        lines
    }

    /// Datagrams of up to `lines_per_datagram` lines holding `requests` requests.
    pub fn datagrams(&mut self, requests: usize, lines_per_datagram: usize) -> Vec<String> {
        let lines: Vec<String> = (0..requests).flat_map(|_| self.request()).collect();
        lines
            .chunks(lines_per_datagram.max(1))
            .map(|c| c.join("\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statsd::parse_datagram;

    #[test]
    fn demo_lines_all_parse_and_are_deterministic() {
        let a = DemoTraffic::new(7).datagrams(2000, 20);
        let b = DemoTraffic::new(7).datagrams(2000, 20);
        assert_eq!(a, b);
        let mut counters = 0;
        let mut timers = 0;
        let mut max_latency: f64 = 0.0;
        for d in &a {
            for line in parse_datagram(d.as_bytes()) {
                let line = line.expect("every demo line parses");
                match line.name {
                    "http.requests" => counters += 1,
                    "http.latency" => {
                        timers += 1;
                        max_latency = max_latency.max(line.values.parse().unwrap());
                    }
                    _ => {}
                }
            }
        }
        assert_eq!((counters, timers), (2000, 2000));
        assert!(max_latency > 1000.0, "a long tail: max {max_latency}");
    }
}
