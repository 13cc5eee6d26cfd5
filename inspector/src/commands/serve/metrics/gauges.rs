//! The gauges read from the kernel at scrape time (TIME_WAIT sockets,
//! ports in use per destination, port range sizes): their busiest label
//! sets by name, the rest summed into `other`, and each label set counted
//! as folded once, when it starts being folded. Each namespace read is
//! named by [`Metrics::netns_labels`].

use std::collections::HashSet;

use prometheus_client::{
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Labels, Metrics, OTHER, name};
use crate::{model::ephemeral::DestKey, output::text::endpoint};

impl Metrics {
    /// Counts the label sets of gauge `metric` folded now that were not at
    /// the previous exposition.
    fn count_gauge_folds(&mut self, metric: &'static str, now: HashSet<String>) {
        let before = self.folded_gauges.entry(metric).or_default();
        let new = now.difference(before).count() as u64;
        *before = now;
        if new > 0 {
            *self.folded.entry(metric).or_default() += new;
        }
    }

    /// The TIME_WAIT gauge's samples: ports of `--port` and the busiest
    /// `max_ports` others (over every namespace) by number, the rest summed
    /// into their namespace's `port="other"`.
    pub(super) fn timewait_rows(&mut self) -> Option<Vec<(Labels, i64)>> {
        let tw = self.kernel.timewait.clone()?;
        let mut rows: Vec<(Labels, i64)> = Vec::new();
        let mut own = 0usize;
        let mut folded = HashSet::new();
        // The snapshot comes busiest first.
        for (netns, proto, port, n) in tw {
            let listed = self.limits.ports.as_ref().is_some_and(|p| p.contains(port));
            let value = if listed || own < self.limits.max_ports {
                own += usize::from(!listed);
                port.to_string()
            } else {
                folded.insert(format!("{netns}/{}:{port}", proto.as_str()));
                OTHER.to_owned()
            };
            let mut labels = self.netns_labels(netns);
            labels.extend([("proto", proto.as_str().to_owned()), ("port", value)]);
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            match rows.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, total)) => *total += n,
                None => rows.push((labels, n)),
            }
        }
        self.count_gauge_folds(name::TIMEWAIT, folded);
        Some(rows)
    }

    /// The ephemeral-port gauge's samples: the busiest `max_series`
    /// destinations, the rest summed into `other`.
    pub(super) fn ephemeral_rows(&mut self) -> Vec<(Labels, i64)> {
        // The kernel's table where it was read: a record-derived count
        // misses what happened before the agent started and, where the
        // kernel counts connections instead of emitting them, all of it.
        let mut rows: Vec<(DestKey, u32)> = match &self.kernel.ephemeral_in_use {
            Some(kernel) => kernel.clone(),
            None => self
                .ephemeral
                .rows()
                .into_iter()
                .map(|r| (r.key, r.in_use))
                .collect(),
        };
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut out: Vec<(Labels, i64)> = Vec::new();
        let mut other = None;
        let mut folded = HashSet::new();
        for (i, (key, n)) in rows.iter().enumerate() {
            let dest = endpoint(key.addr, key.port);
            if i < self.limits.max_series {
                let mut labels = self.netns_labels(key.netns);
                labels.push(("destination", dest));
                out.push((labels, i64::from(*n)));
            } else {
                folded.insert(format!("{}/{dest}", key.netns));
                *other.get_or_insert(0) += i64::from(*n);
            }
        }
        if let Some(n) = other {
            let mut labels = self.other_netns_labels();
            labels.push(("destination", OTHER.to_owned()));
            out.push((labels, n));
        }
        self.count_gauge_folds(name::PORTS_IN_USE, folded);
        out
    }

    pub(super) fn register_ephemeral(&self, reg: &mut Registry, rows: Vec<(Labels, i64)>) {
        reg.register(
            name::PORTS_IN_USE,
            "Local ports held toward each destination (netns, address:port) by client connections, live or in TIME_WAIT, from the kernel's socket table (or the records seen where it cannot be read); compare with inspector_ephemeral_port_range_size",
            gauge_family(rows),
        );
        let size = Family::<Labels, Gauge>::default();
        for (netns, range) in &self.kernel.port_ranges {
            size.get_or_create(&self.netns_labels(*netns))
                .set(i64::from(range.size()));
        }
        reg.register(
            name::RANGE_SIZE,
            "Ports connect() can choose from: net.ipv4.ip_local_port_range less ip_local_reserved_ports, per network namespace",
            size,
        );
    }
}

pub(super) fn gauge_family(rows: Vec<(Labels, i64)>) -> Family<Labels, Gauge> {
    let family = Family::<Labels, Gauge>::default();
    for (labels, n) in rows {
        family.get_or_create(&labels).inc_by(n);
    }
    family
}
