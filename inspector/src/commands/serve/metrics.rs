//! The metrics of `inspector serve`: records (and, at scrape time, kernel
//! counters and socket snapshots) in, a Prometheus exposition out. No I/O
//! here: the HTTP side and the kernel side live in the sibling modules.
//!
//! Label cardinality is bounded on purpose, since a scrape target that grows
//! without limit hurts the Prometheus server more than it helps:
//! - `port` takes its number for ports of the `--port` filter and for the
//!   first `max_ports` other ports seen; later ports read `other`;
//! - every metric keeps at most `max_series` label sets; what comes after
//!   is added to one series whose labels all read `other`;
//! - each fold adds to `inspector_series_folded_total{metric}`;
//! - a SO_REUSEPORT member whose listener closed is shown one more scrape,
//!   then dropped;
//! - the optional `container` label (`--container-label`) of the bind
//!   failures and the per-member deliveries adds label sets that the same
//!   `max_series` cap folds.
//! - ephemeral ports in use are tracked for at most
//!   [`MAX_DESTS`](crate::model::ephemeral::MAX_DESTS) destinations (the
//!   idlest go); the busiest `max_series` get their own series, the rest are
//!   summed into the `other` one.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{
    kernel::probe::Counters,
    kernel::{Proto, TcpState},
    model::ephemeral::{DestKey, Ephemeral, PortRange},
    model::filter::PortSet,
    model::record::{Record, RecordType, proto_str},
    output::text::endpoint,
};

/// The key of the member that stands for every member past the limit.
const FOLDED_MEMBER: (&str, u32, u64) = (OTHER, 0, 0);

/// The label value of a folded label.
pub const OTHER: &str = "other";

/// Longest explanation kept in the `inspector_last_bind_failure_info`
/// label, in bytes (cut at a character boundary).
pub const EXPLANATION_MAX: usize = 240;

/// How many series the metrics may create.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Ports that always get their own label value (`--port`).
    pub ports: Option<PortSet>,
    /// Distinct other ports that get their own label value.
    pub max_ports: usize,
    /// Label sets per metric before folding into `other`.
    pub max_series: usize,
    /// Adds a `container` label (the record's container id or machine
    /// name; empty outside one) to the bind failures and the per-member
    /// deliveries.
    pub container_label: bool,
    /// Adds `namespace`, `pod` and `container` (the container's name, or
    /// its id where the pod's directory does not tell) to the bind and
    /// connect failures, the deliveries and the ephemeral ports
    /// (`--kubernetes`).
    pub kubernetes: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ports: None,
            max_ports: 256,
            max_series: 2048,
            container_label: false,
            kubernetes: false,
        }
    }
}

type Labels = Vec<(&'static str, String)>;

/// One counter metric's series: label values in a fixed order.
#[derive(Debug, Default)]
struct Series {
    values: HashMap<Vec<String>, u64>,
}

/// One member of a SO_REUSEPORT group, keyed by its kernel socket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Member {
    proto: &'static str,
    port: String,
    netns: u32,
    ino: String,
    pid: String,
    comm: String,
    /// Only with [`Limits::container_label`] or [`Limits::kubernetes`].
    container: String,
    /// Kubernetes namespace and pod, with [`Limits::kubernetes`].
    pod: (String, String),
    /// Deliveries seen as events.
    deliveries: u64,
    /// Deliveries counted in the kernel ([`KernelView::members`]).
    counted: u64,
    /// `deliveries + counted` at the previous scrape: the imbalance ratio is over
    /// what happened in between.
    at_last_scrape: u64,
    /// The listener closed: shown at the next scrape, then dropped.
    closed: bool,
}

/// What the kernel side reports at scrape time.
#[derive(Debug, Clone, Default)]
pub struct KernelView {
    pub counters: Counters,
    /// Events read from the ring buffer since load.
    pub events_read: u64,
    /// Per program: total run time in nanoseconds, when
    /// `kernel.bpf_stats_enabled` is on.
    pub run_time_ns: Vec<(String, u64)>,
    /// TIME_WAIT sockets by (netns, proto, local port), from socket-table
    /// snapshots; `None` when no snapshot could be taken.
    pub timewait: Option<Vec<(u32, Proto, u16, u64)>>,
    /// The namespaces read, their names and pods.
    pub netns: NetnsView,
    /// Calls counted in the kernel, by (kind, proto, phase, errno), when
    /// the probes count rather than emit them.
    pub outcomes: Option<Vec<(inspector_common::Outcome, u64)>>,
    /// SO_REUSEPORT members and their deliveries counted in the kernel.
    pub members: Vec<KernelMember>,
    /// `ip_local_port_range` less reserved ports, per namespace read.
    pub port_ranges: Vec<(u32, PortRange)>,
    /// Local ports in use per destination from the kernel's socket table
    /// of the agent's namespace; `None` where it could not be read, and
    /// the counts then come from the records seen.
    pub ephemeral_in_use: Option<Vec<(DestKey, u32)>>,
}

/// What the agent reports of itself at scrape time.
#[derive(Debug, Clone, Default)]
pub struct AgentView {
    /// `--record`: write errors, records lost while stopped, and whether
    /// it is recording now (`None` without `--record`).
    pub record_errors: u64,
    pub records_lost: u64,
    pub recording: Option<bool>,
    /// Log lines left out by the rate limit.
    pub log_suppressed: u64,
    /// HTTP connections closed or refused by the endpoint's bounds, and
    /// requests refused for want of credentials.
    pub http_evicted: u64,
    pub http_refused: u64,
    pub http_timed_out: u64,
    pub http_unauthorized: u64,
}

/// A SO_REUSEPORT member as the kernel counted it.
#[derive(Debug, Clone, Default)]
pub struct KernelMember {
    /// Kernel socket address (the key of events about it too).
    pub sock: u64,
    pub proto: Option<Proto>,
    pub lport: u16,
    pub netns: u32,
    pub ino: u64,
    /// Its owner as the kernel remembers it.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Its owner's container, where the owner's cgroup names one.
    pub container: Option<String>,
    /// Its owner's pod, where the kubelet's directories name it.
    pub pod: Option<std::sync::Arc<crate::kernel::pods::Pod>>,
    pub deliveries: u64,
}

impl Member {
    fn total(&self) -> u64 {
        self.deliveries + self.counted
    }
}

/// The aggregated state behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    limits: Limits,
    /// Ports given their own label value so far (outside `limits.ports`).
    labelled_ports: HashSet<u16>,
    bind_decisions: Series,
    bind_failures: Series,
    connect_failures: Series,
    timewait_exits: Series,
    /// Folds by metric name.
    folded: HashMap<&'static str, u64>,
    last_failure: Option<Labels>,
    /// Keyed by (proto, netns, kernel socket address).
    members: HashMap<(&'static str, u32, u64), Member>,
    /// Listeners seen closing before the kernel's count of them was read.
    closed: HashSet<(&'static str, u32, u64)>,
    /// Members dropped by the last exposition, by kernel socket address:
    /// their kernel counts are to be forgotten.
    forgotten: Vec<u64>,
    /// Bind decisions come from [`KernelView::outcomes`], not records.
    decisions_counted: bool,
    /// Local ports in use per destination.
    ephemeral: Ephemeral,
    kernel: KernelView,
    agent: AgentView,
}

/// Metric names (without the `_total` a counter's samples carry).
mod name {
    pub const BIND_DECISIONS: &str = "inspector_bind_decisions";
    pub const BIND_FAILURES: &str = "inspector_bind_failures";
    pub const CONNECT_FAILURES: &str = "inspector_connect_failures";
    pub const TIMEWAIT_EXITS: &str = "inspector_timewait_exits";
    pub const DELIVERIES: &str = "inspector_reuseport_deliveries";
    pub const TIMEWAIT: &str = "inspector_timewait_sockets";
    pub const PORTS_IN_USE: &str = "inspector_ephemeral_ports_in_use";
    pub const RANGE_SIZE: &str = "inspector_ephemeral_port_range_size";
}

impl Metrics {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// The `port` label of `port`: its number, or `other` once
    /// `max_ports` ports outside the filter have their own.
    fn port_label(&mut self, port: u16, metric: &'static str) -> String {
        let listed = self.limits.ports.as_ref().is_some_and(|p| p.contains(port));
        if listed || self.labelled_ports.contains(&port) {
            return port.to_string();
        }
        if self.labelled_ports.len() < self.limits.max_ports {
            self.labelled_ports.insert(port);
            return port.to_string();
        }
        *self.folded.entry(metric).or_default() += 1;
        OTHER.to_owned()
    }

    /// Adds `n` to the series `values` of `metric`, folding into the
    /// all-`other` series past `max_series`.
    fn bump(&mut self, metric: &'static str, values: Vec<String>, n: u64) {
        let max = self.limits.max_series;
        let series = match metric {
            name::BIND_DECISIONS => &mut self.bind_decisions,
            name::BIND_FAILURES => &mut self.bind_failures,
            name::CONNECT_FAILURES => &mut self.connect_failures,
            _ => &mut self.timewait_exits,
        };
        let key = if series.values.contains_key(&values) || series.values.len() < max {
            values
        } else {
            *self.folded.entry(metric).or_default() += n;
            vec![OTHER.to_owned(); values.len()]
        };
        *series.values.entry(key).or_default() += n;
    }

    /// Namespaces with client connections tracked: the ones whose port
    /// range the next scrape wants.
    pub fn client_namespaces(&self) -> std::collections::BTreeSet<u32> {
        self.ephemeral.namespaces()
    }

    /// Counts one record.
    pub fn apply(&mut self, r: &Record) {
        self.ephemeral.apply(r);
        let proto = proto_str(r.proto);
        let failed = r.errno.filter(|e| e.is_failure());
        match r.kind {
            RecordType::Bind => {
                let phase = r.phase.map_or("unknown", |p| p.as_str());
                let result = failed.map_or_else(|| "ok".to_owned(), |e| e.to_string());
                if !self.decisions_counted {
                    self.bump(
                        name::BIND_DECISIONS,
                        vec![proto.into(), phase.into(), result],
                        1,
                    );
                }
                if let Some(e) = failed {
                    let port = r.req_port.filter(|&p| p != 0).unwrap_or(r.lport);
                    let port = self.port_label(port, name::BIND_FAILURES);
                    let mut values = vec![proto.into(), port.clone(), e.to_string()];
                    values.extend(self.container_values(r, true));
                    self.bump(name::BIND_FAILURES, values, 1);
                    self.last_failure = Some(vec![
                        ("proto", proto.into()),
                        ("port", port),
                        ("errno", e.to_string()),
                        (
                            "explanation",
                            clip(r.explanation.as_deref().unwrap_or(""), EXPLANATION_MAX),
                        ),
                    ]);
                }
            }
            RecordType::Connect => {
                if let Some(e) = failed {
                    let mut values = vec![proto.into(), e.to_string()];
                    values.extend(self.container_values(r, false));
                    self.bump(name::CONNECT_FAILURES, values, 1);
                }
            }
            RecordType::TwExit => {
                let reason = r.reason.map_or("unknown", |x| x.as_str());
                self.bump(name::TIMEWAIT_EXITS, vec![reason.into()], 1);
            }
            RecordType::Reuseport => {
                self.deliver(r, proto, 1);
            }
            RecordType::State => {
                // A listener that closes leaves its group.
                if r.old_state == Some(TcpState::LISTEN) {
                    let key = (proto, r.netns, r.sock);
                    match self.members.get_mut(&key) {
                        Some(m) => m.closed = true,
                        None => {
                            self.closed.insert(key);
                        }
                    }
                }
            }
            RecordType::Accept | RecordType::TwEnter => {}
        }
    }

    /// Counts a delivery to the member `r` names, created on first sight.
    fn deliver(&mut self, r: &Record, proto: &'static str, n: u64) {
        let mut key = (proto, r.netns, r.sock);
        if !self.members.contains_key(&key) {
            let member = if self.members.len() < self.limits.max_series {
                Member {
                    proto,
                    port: self.port_label(r.lport, name::DELIVERIES),
                    netns: r.netns,
                    ino: r.ino.map(|i| i.to_string()).unwrap_or_default(),
                    pid: r.pid.map(|p| p.to_string()).unwrap_or_default(),
                    comm: r.comm.clone().unwrap_or_default(),
                    container: member_container(r),
                    pod: pod_of(r),
                    deliveries: 0,
                    counted: 0,
                    at_last_scrape: 0,
                    closed: false,
                }
            } else {
                *self.folded.entry(name::DELIVERIES).or_default() += n;
                key = FOLDED_MEMBER;
                Member {
                    proto: OTHER,
                    port: OTHER.to_owned(),
                    netns: 0,
                    ino: OTHER.to_owned(),
                    pid: OTHER.to_owned(),
                    comm: OTHER.to_owned(),
                    container: OTHER.to_owned(),
                    pod: (OTHER.to_owned(), OTHER.to_owned()),
                    deliveries: 0,
                    counted: 0,
                    at_last_scrape: 0,
                    closed: false,
                }
            };
            self.members.entry(key).or_insert(member);
        }
        let Some(m) = self.members.get_mut(&key) else {
            return;
        };
        m.deliveries += n;
        // The owner may be learnt after the first delivery.
        if m.pid.is_empty()
            && let Some(pid) = r.pid
        {
            m.pid = pid.to_string();
            m.comm = r.comm.clone().unwrap_or_default();
        }
        if m.container.is_empty() && r.container.is_some() && m.ino != OTHER {
            m.container = member_container(r);
            m.pod = pod_of(r);
        }
    }

    /// Takes bind decisions from the kernel's counts
    /// ([`KernelView::outcomes`]) instead of from records.
    pub fn count_decisions_in_kernel(&mut self) {
        self.decisions_counted = true;
    }

    /// Takes the kernel side's view for the next [`Metrics::encode`].
    pub fn set_kernel(&mut self, mut view: KernelView) {
        if self.decisions_counted
            && let Some(outcomes) = &view.outcomes
        {
            self.set_decisions(outcomes);
        }
        for k in std::mem::take(&mut view.members) {
            self.count_member(&k);
        }
        self.closed.clear();
        self.kernel = view;
    }

    /// Rebuilds the bind decisions from the kernel's totals. They only
    /// grow, and their keys are few (kind, proto, phase, errno): past
    /// `max_series` they read `other` without counting as folds again at
    /// every scrape.
    fn set_decisions(&mut self, outcomes: &[(inspector_common::Outcome, u64)]) {
        let max = self.limits.max_series;
        let mut values: HashMap<Vec<String>, u64> = HashMap::new();
        for (o, n) in outcomes {
            if o.kind != inspector_common::kind::BIND {
                continue;
            }
            let proto = proto_str(Proto::from_kernel(o.proto));
            let phase = crate::kernel::Phase::from_kernel(o.phase).as_str();
            let errno = crate::kernel::Errno::from(o.errno);
            let result = if errno.is_failure() {
                errno.to_string()
            } else {
                "ok".to_owned()
            };
            let mut key = vec![proto.to_owned(), phase.to_owned(), result];
            if !values.contains_key(&key) && values.len() >= max {
                key = vec![OTHER.to_owned(); 3];
            }
            *values.entry(key).or_default() += n;
        }
        self.bind_decisions.values = values;
    }

    /// Sets the kernel's count of one member, created on first sight.
    fn count_member(&mut self, k: &KernelMember) {
        let proto = proto_str(k.proto);
        let key = (proto, k.netns, k.sock);
        if !self.members.contains_key(&key) {
            if self.members.len() >= self.limits.max_series {
                // Folded: the kernel total is absolute, so the folded
                // member cannot add it up scrape after scrape; counted once
                // as folded, not shown.
                *self.folded.entry(name::DELIVERIES).or_default() += 1;
                self.forgotten.push(k.sock);
                return;
            }
            let member = Member {
                proto,
                port: self.port_label(k.lport, name::DELIVERIES),
                netns: k.netns,
                ino: if k.ino == 0 {
                    String::new()
                } else {
                    k.ino.to_string()
                },
                pid: k.pid.map(|p| p.to_string()).unwrap_or_default(),
                comm: k.comm.clone().unwrap_or_default(),
                container: self.kernel_member_container(k),
                pod: k
                    .pod
                    .as_ref()
                    .map_or_else(Default::default, |p| (p.namespace.clone(), p.pod.clone())),
                deliveries: 0,
                counted: 0,
                at_last_scrape: 0,
                closed: self.closed.contains(&key),
            };
            self.members.insert(key, member);
        }
        let Some(m) = self.members.get_mut(&key) else {
            return;
        };
        m.counted = k.deliveries;
        if m.pid.is_empty()
            && let Some(pid) = k.pid
        {
            m.pid = pid.to_string();
            m.comm = k.comm.clone().unwrap_or_default();
        }
    }

    /// Kernel socket addresses of the members the last exposition dropped
    /// (their listener closed).
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.forgotten)
    }

    /// What the agent says of itself at the next exposition.
    pub fn set_agent(&mut self, agent: AgentView) {
        self.agent = agent;
    }

    /// The exposition in OpenMetrics text, then forgets closed group
    /// members and starts the next imbalance interval.
    pub fn encode_openmetrics(&mut self) -> String {
        let mut reg = Registry::default();
        self.register(&mut reg);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        let forgotten = &mut self.forgotten;
        self.members.retain(|&(_, _, sock), m| {
            if m.closed {
                forgotten.push(sock);
            }
            !m.closed
        });
        for m in self.members.values_mut() {
            m.at_last_scrape = m.total();
        }
        out
    }

    /// The exposition in the Prometheus text format 0.0.4.
    pub fn encode_text(&mut self) -> String {
        openmetrics_to_text(&self.encode_openmetrics())
    }

    fn register(&self, reg: &mut Registry) {
        counter_family(
            reg,
            name::BIND_DECISIONS,
            "bind(), listen() and autobind decisions of the kernel's port allocator, by outcome (ok or the errno the caller saw)",
            &["proto", "phase", "result"],
            &self.bind_decisions,
        );
        counter_family(
            reg,
            name::BIND_FAILURES,
            "Failed bind() and listen() calls by requested port and errno",
            &self.keys(&["proto", "port", "errno"], true),
            &self.bind_failures,
        );
        if let Some(labels) = &self.last_failure {
            reg.register(
                "inspector_last_bind_failure",
                "The most recent failed bind() or listen() and the kernel rule that refused it",
                Info::new(labels.clone()),
            );
        }
        counter_family(
            reg,
            name::CONNECT_FAILURES,
            "Failed connect() calls by errno (EADDRNOTAVAIL: no ephemeral port left)",
            &self.keys(&["proto", "errno"], false),
            &self.connect_failures,
        );
        counter_family(
            reg,
            name::TIMEWAIT_EXITS,
            "TIME_WAIT sockets that ended: timer expired, killed (RST) or reused by a new connection",
            &["reason"],
            &self.timewait_exits,
        );

        let deliveries = Family::<Labels, Counter>::default();
        let imbalance = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        // Per group: (members' deltas) for max/mean.
        let mut groups: HashMap<(&str, &str, u32), Vec<u64>> = HashMap::new();
        for m in self.members.values() {
            let mut labels = vec![
                ("proto", m.proto.to_owned()),
                ("port", m.port.clone()),
                ("netns", m.netns.to_string()),
                ("socket", m.ino.clone()),
                ("pid", m.pid.clone()),
                ("comm", m.comm.clone()),
            ];
            self.member_labels(m, &mut labels);
            deliveries.get_or_create(&labels).inc_by(m.total());
            groups
                .entry((m.proto, m.port.as_str(), m.netns))
                .or_default()
                .push(m.total().saturating_sub(m.at_last_scrape));
        }
        for ((proto, port, netns), deltas) in groups {
            if let Some(ratio) = imbalance_ratio(&deltas) {
                imbalance
                    .get_or_create(&vec![
                        ("proto", proto.to_owned()),
                        ("port", port.to_owned()),
                        ("netns", netns.to_string()),
                    ])
                    .set(ratio);
            }
        }
        reg.register(
            name::DELIVERIES,
            "Connections (TCP) or datagrams (UDP) the kernel gave each member of a SO_REUSEPORT group; socket is the inode",
            deliveries,
        );
        reg.register(
            "inspector_reuseport_imbalance_ratio",
            "Busiest member's deliveries over the group's mean since the previous scrape (1 = even)",
            imbalance,
        );

        if let Some(tw) = &self.kernel.timewait {
            let gauge = Family::<Labels, Gauge>::default();
            let mut ports = 0usize;
            for &(netns, proto, port, n) in tw {
                // Same bounds as the counters, without remembering ports:
                // the snapshot is whole each time.
                let listed = self.limits.ports.as_ref().is_some_and(|p| p.contains(port))
                    || self.labelled_ports.contains(&port);
                let port = if listed || ports < self.limits.max_ports {
                    ports += usize::from(!listed);
                    port.to_string()
                } else {
                    OTHER.to_owned()
                };
                let mut labels = self.netns_labels(netns);
                labels.extend([("proto", proto.as_str().to_owned()), ("port", port)]);
                gauge.get_or_create(&labels).inc_by(n as i64);
            }
            reg.register(
                name::TIMEWAIT,
                "TCP sockets in TIME_WAIT by network namespace and local port, counted in the socket tables at scrape time",
                gauge,
            );
        }

        self.register_ephemeral(reg);
        self.register_namespaces(reg);

        let c = &self.kernel.counters;
        let events = Counter::<u64>::default();
        events.inc_by(self.kernel.events_read);
        reg.register(
            "inspector_events",
            "Events read from the kernel's ring buffer",
            events,
        );
        let dropped = Counter::<u64>::default();
        dropped.inc_by(c.dropped);
        reg.register(
            "inspector_events_dropped",
            "Events the kernel could not write because the ring buffer was full",
            dropped,
        );
        let errors = Family::<Labels, Counter>::default();
        for (kind, n) in c.errors() {
            errors
                .get_or_create(&vec![("kind", kind.to_owned())])
                .inc_by(n);
        }
        reg.register(
            "inspector_kernel_errors",
            "Kernel-side failures of the probes by kind (a read that failed, a full map)",
            errors,
        );
        if !self.kernel.run_time_ns.is_empty() {
            let run = Family::<Labels, Counter<f64, std::sync::atomic::AtomicU64>>::default();
            for (program, ns) in &self.kernel.run_time_ns {
                run.get_or_create(&vec![("program", program.clone())])
                    .inc_by(*ns as f64 / 1e9);
            }
            reg.register(
                "inspector_bpf_program_run_seconds",
                "CPU time spent in each kernel program (kernel.bpf_stats_enabled=1)",
                run,
            );
        }
        let folded = Family::<Labels, Counter>::default();
        for (metric, n) in &self.folded {
            folded
                .get_or_create(&vec![("metric", (*metric).to_owned())])
                .inc_by(*n);
        }
        reg.register(
            "inspector_series_folded",
            "Increments added to an 'other' label value because a label limit (--max-ports, --max-series) was reached",
            folded,
        );
        self.register_agent(reg);
    }

    fn register_agent(&self, reg: &mut Registry) {
        let a = &self.agent;
        let counter = |n: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(n);
            c
        };
        if let Some(recording) = a.recording {
            reg.register(
                "inspector_record_errors",
                "Write errors of --record (a full disk...): each stops the recording, which starts again in a new file 30 s later",
                counter(a.record_errors),
            );
            reg.register(
                "inspector_records_lost",
                "Records not written because a write error had stopped --record",
                counter(a.records_lost),
            );
            let g = Gauge::<i64>::default();
            g.set(i64::from(recording));
            reg.register(
                "inspector_recording",
                "1 while --record writes, 0 while a write error has it stopped",
                g,
            );
        }
        reg.register(
            "inspector_log_lines_suppressed",
            "Log lines left out: a failure of the same kind (port, errno, owner) is logged once a minute",
            counter(a.log_suppressed),
        );
        let http = Family::<Labels, Counter>::default();
        for (reason, n) in [
            ("evicted", a.http_evicted),
            ("refused", a.http_refused),
            ("timeout", a.http_timed_out),
            ("unauthorized", a.http_unauthorized),
        ] {
            http.get_or_create(&vec![("reason", reason.to_owned())])
                .inc_by(n);
        }
        reg.register(
            "inspector_http_rejected",
            "HTTP connections or requests the endpoint turned away: evicted (the longest idle, for a new one past the connection limit), refused (every connection busy), timeout (no request or handshake in time), unauthorized",
            http,
        );
    }
}

impl Metrics {
    fn register_ephemeral(&self, reg: &mut Registry) {
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
        // The busiest keep their own series.
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let in_use = Family::<Labels, Gauge>::default();
        for (i, (key, n)) in rows.iter().enumerate() {
            let labels = if i < self.limits.max_series {
                let mut labels = self.netns_labels(key.netns);
                labels.push(("destination", endpoint(key.addr, key.port)));
                labels
            } else {
                let mut labels = self.other_netns_labels();
                labels.push(("destination", OTHER.to_owned()));
                labels
            };
            in_use.get_or_create(&labels).inc_by(i64::from(*n));
        }
        reg.register(
            name::PORTS_IN_USE,
            "Local ports held toward each destination (netns, address:port) by client connections, live or in TIME_WAIT, from the kernel's socket table (or the records seen where it cannot be read); compare with inspector_ephemeral_port_range_size",
            in_use,
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

fn counter_family(
    reg: &mut Registry,
    name: &'static str,
    help: &'static str,
    keys: &[&'static str],
    series: &Series,
) {
    let family = Family::<Labels, Counter>::default();
    for (values, n) in &series.values {
        let labels: Labels = keys.iter().copied().zip(values.iter().cloned()).collect();
        family.get_or_create(&labels).inc_by(*n);
    }
    reg.register(name, help, family);
}

/// max/mean of the members' deliveries over an interval; `None` when there
/// were none.
pub fn imbalance_ratio(deltas: &[u64]) -> Option<f64> {
    let total: u64 = deltas.iter().sum();
    if total == 0 || deltas.is_empty() {
        return None;
    }
    let max = deltas.iter().copied().max().unwrap_or(0) as f64;
    Some(max / (total as f64 / deltas.len() as f64))
}

/// The `container` label value of `r`: its container id or machine name,
/// empty outside one (an empty label is no label to Prometheus).
fn container(r: &Record) -> String {
    r.container.clone().unwrap_or_default()
}

/// `s` cut to at most `max` bytes at a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Rewrites an OpenMetrics text exposition as Prometheus text 0.0.4, for
/// scrapers that do not ask for OpenMetrics: there a counter's `# TYPE` and
/// `# HELP` name its samples (`x_total`), an info metric is a gauge
/// `x_info`, and there are no `# UNIT` or `# EOF` lines. Label and sample
/// lines are the same in both.
pub fn openmetrics_to_text(om: &str) -> String {
    // The metadata of a family precedes its samples; a family's TYPE tells
    // how to rename its HELP, so hold HELP until the TYPE arrives.
    let mut out = String::with_capacity(om.len());
    let mut help: Option<(&str, &str)> = None;
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" | "stateset" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some((_, text)) = help.take() {
                let _ = writeln!(out, "# HELP {name} {text}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

mod labels;
#[cfg(test)]
mod tests;

pub use self::labels::NetnsView;
use self::labels::{member_container, pod_of};
