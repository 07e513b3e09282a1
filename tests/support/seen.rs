//! What metrics-util's debugging recorder saw, added up across snapshots
//! (it hands values out and resets them).

use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, Snapshotter};

/// Every value seen so far: the debugging recorder hands out values and
/// resets them, so snapshots add up. The tests of this binary run at once
/// and share the recorder: every snapshot goes into one process-wide tally,
/// and each test reads its own breakers' series from it.
#[derive(Default, Clone)]
pub struct Seen {
    pub counters: HashMap<(String, Vec<(String, String)>), u64>,
    pub gauges: HashMap<(String, Vec<(String, String)>), f64>,
    pub histograms: HashMap<String, usize>,
}

impl Seen {
    pub fn take(&mut self, snapshotter: &Snapshotter) {
        static ALL: std::sync::Mutex<Option<Seen>> = std::sync::Mutex::new(None);
        let mut all = ALL.lock().unwrap();
        let all = all.get_or_insert_with(Seen::default);
        all.add(snapshotter);
        *self = all.clone();
    }

    fn add(&mut self, snapshotter: &Snapshotter) {
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let id = (key.name().to_owned(), labels);
            match value {
                DebugValue::Counter(n) => *self.counters.entry(id).or_default() += n,
                DebugValue::Gauge(v) => *self.gauges.entry(id).or_default() += v.into_inner(),
                DebugValue::Histogram(v) => *self.histograms.entry(id.0).or_default() += v.len(),
            }
        }
    }

    /// The sum of a counter over the series whose labels include `with`.
    pub fn counter(&self, name: &str, with: &[(&str, &str)]) -> u64 {
        self.counters
            .iter()
            .filter(|((n, labels), _)| n == name && includes(labels, with))
            .map(|(_, v)| *v)
            .sum()
    }

    pub fn gauge(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.gauges
            .iter()
            .filter(|((n, labels), _)| n == name && includes(labels, with))
            .map(|(_, v)| *v)
            .sum()
    }
}

fn includes(labels: &[(String, String)], with: &[(&str, &str)]) -> bool {
    with.iter()
        .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
}
