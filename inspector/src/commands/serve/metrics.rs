//! The metrics of `inspector serve`: records (and, at scrape time, kernel
//! counters and socket snapshots) in, a Prometheus exposition out. No I/O
//! here: the HTTP side and the kernel side live in the sibling modules.
//!
//! Label cardinality is bounded on purpose, since a scrape target that grows
//! without limit hurts the Prometheus server more than it helps:
//! - `port` of the bind failures takes its number for ports of the `--port`
//!   filter and for the `max_ports` ports that failed most recently
//!   ([`lru`]): a port that starts failing gets its own series at once, and
//!   the least recently failing one folds into `port="other"`;
//! - `destination` (and `netns`) of the connect failures likewise, for the
//!   `max_destinations` most recent destinations;
//! - every counter keeps at most `max_series` label sets; what comes after
//!   is added to one series whose labels all read `other`;
//! - the TIME_WAIT and ephemeral-port gauges give their busiest label sets
//!   their own series (`max_ports`, `max_series`) and sum the rest into
//!   `other`;
//! - SO_REUSEPORT members are named by group, member index and owner, not
//!   by socket ([`members`]); a member whose listener closed is shown one
//!   more scrape, then dropped;
//! - the TIME_WAIT, ephemeral-port and port-range gauges read every
//!   network namespace found ([`NetnsView`]) and name it by its
//!   `/run/netns` name, else its inode; the counters' `netns` is the inode;
//! - with `--kubernetes`, the bind and connect failures, the deliveries and
//!   the per-namespace gauges carry `namespace`, `pod` and `container`
//!   ([`labels`]);
//! - every label value from another process (comm, container, pod and
//!   namespace names) is cut to
//!   [`LABEL_MAX`] bytes and its control characters escaped; no label holds
//!   free text (explanations go to the log);
//! - each fold is counted in `inspector_series_folded_total{metric}`: for a
//!   counter, the increments moved into `other`; for a gauge, each label
//!   set once when it starts being folded (so that a second scraper does
//!   not change the count).
//!
//! A series whose port or destination was evicted disappears, and starts
//! again from 0 if that port fails again: Prometheus takes the drop as a
//! counter reset, which `rate()` and `increase()` account for.

mod gauges;
mod labels;
mod lru;
mod members;
mod process;

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::IpAddr,
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

pub use self::{labels::NetnsView, process::BuildInfo};
use self::{
    lru::{Lru, Touch},
    members::Members,
};
use crate::{
    kernel::probe::Counters,
    kernel::sys::ProcessStats,
    kernel::{Proto, TcpState},
    model::ephemeral::{DestKey, Ephemeral, PortRange},
    model::filter::PortSet,
    model::record::{Record, RecordType, proto_str},
    output::text::endpoint,
};

/// The label value of a folded label.
pub const OTHER: &str = "other";

/// Longest label value, in bytes (cut at a character boundary). Kernel
/// names are shorter (a comm is 15 bytes); container ids and names are
/// what it bounds.
pub const LABEL_MAX: usize = 128;

/// How many series the metrics may create.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Ports that always get their own label value (`--port`).
    pub ports: Option<PortSet>,
    /// Other ports with their own label value: the most recently failing.
    pub max_ports: usize,
    /// Connect destinations (netns, address:port) with their own label
    /// value: the most recently failing.
    pub max_destinations: usize,
    /// Label sets per metric before folding into `other`.
    pub max_series: usize,
    /// Adds a `container` label (the record's container id or machine
    /// name; empty outside one) to the bind failures and the per-member
    /// deliveries.
    pub container_label: bool,
    /// Adds a `socket` label (the inode) to the per-member deliveries.
    pub socket_inode_label: bool,
    /// Adds `namespace`, `pod` and `container` (the container's name, or
    /// its id where the pod's directory does not tell) to the bind and
    /// connect failures, the deliveries and the per-namespace gauges
    /// (`--kubernetes`).
    pub kubernetes: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            ports: None,
            max_ports: 256,
            max_destinations: 256,
            max_series: 2048,
            container_label: false,
            socket_inode_label: false,
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

impl Series {
    /// Moves the series `pick` chooses into the one `rewrite` makes of
    /// each: the number of series never grows. Returns the sum moved.
    fn fold(
        &mut self,
        pick: impl Fn(&[String]) -> bool,
        rewrite: impl Fn(&mut Vec<String>),
    ) -> u64 {
        let picked: Vec<Vec<String>> = self.values.keys().filter(|k| pick(k)).cloned().collect();
        let mut moved = 0;
        for mut key in picked {
            let n = self.values.remove(&key).unwrap_or(0);
            rewrite(&mut key);
            *self.values.entry(key).or_default() += n;
            moved += n;
        }
        moved
    }
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
    /// snapshots, busiest first; `None` when no snapshot could be taken.
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
    /// Local ports in use per destination from the kernel's socket tables
    /// of the namespaces read; `None` where none could be read, and
    /// the counts then come from the records seen.
    pub ephemeral_in_use: Option<Vec<(DestKey, u32)>>,
    /// The accept queues of the SO_REUSEPORT listeners of the namespaces
    /// read, by (netns, socket inode); a member not found here (its
    /// namespace not read) shows no queue.
    pub accept_queues: HashMap<(u32, u64), AcceptQueue>,
    /// Accepts counted in the kernel by (listening socket, process), of
    /// processes alive at the scrape.
    pub accepts: Vec<(inspector_common::AcceptKey, inspector_common::AcceptCount)>,
    /// TIME_WAIT entries and exits counted in the kernel, when the probes
    /// count rather than emit them.
    pub timewait_counted: Option<inspector_common::TwTotals>,
}

/// A TCP listener's accept queue as the socket iterator read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptQueue {
    /// Connections waiting for accept() (`sk_ack_backlog`).
    pub length: u32,
    /// The most that may wait (`sk_max_ack_backlog`: the listen() backlog
    /// capped by `net.core.somaxconn`); the kernel refuses the next one
    /// once `length` exceeds it (`sk_acceptq_is_full()`).
    pub limit: u32,
    /// The listener's drops since it was created (`sk_drops`), which
    /// `tcp_listendrop()` raises when the queue is full.
    pub drops: u64,
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
    /// `/proc/self` now, for the `process_*` metrics.
    pub process: Option<ProcessStats>,
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

/// The aggregated state behind `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    limits: Limits,
    /// Ports with their own label value (outside `limits.ports`).
    ports: Lru<u16>,
    /// Connect destinations with their own label values.
    destinations: Lru<(u32, IpAddr, u16)>,
    bind_decisions: Series,
    bind_failures: Series,
    connect_failures: Series,
    timewait_exits: Series,
    /// TIME_WAIT entries from records (`tw_enter`).
    timewait_entries: u64,
    /// The highest TIME_WAIT totals the kernel has given: a read between
    /// a timer's detach and its follow-up sees the detach as an exit for a
    /// moment (`TwTotals::from_slots`), and a counter must not go back.
    timewait_counted: inspector_common::TwTotals,
    /// Folds by metric name.
    folded: HashMap<&'static str, u64>,
    /// Label sets of each gauge folded at the previous exposition: a set
    /// is counted as folded when it starts being folded, not per scrape.
    folded_gauges: HashMap<&'static str, HashSet<String>>,
    last_failure: Option<Labels>,
    members: Members,
    /// Kernel accept counts past the series limit.
    forgotten_accepts: Vec<inspector_common::AcceptKey>,
    /// Bind decisions come from [`KernelView::outcomes`], not records.
    decisions_counted: bool,
    /// Local ports in use per destination.
    ephemeral: Ephemeral,
    kernel: KernelView,
    agent: AgentView,
    build: Option<BuildInfo>,
}

/// Metric names (without the `_total` a counter's samples carry).
mod name {
    pub const BIND_DECISIONS: &str = "inspector_bind_decisions";
    pub const BIND_FAILURES: &str = "inspector_bind_failures";
    pub const CONNECT_FAILURES: &str = "inspector_connect_failures";
    pub const TIMEWAIT_EXITS: &str = "inspector_timewait_exits";
    pub const TIMEWAIT_ENTRIES: &str = "inspector_timewait_entries";
    pub const DELIVERIES: &str = "inspector_reuseport_deliveries";
    pub const QUEUE_LENGTH: &str = "inspector_accept_queue_length";
    pub const QUEUE_LIMIT: &str = "inspector_accept_queue_limit";
    pub const QUEUE_DROPS: &str = "inspector_accept_queue_drops";
    pub const ACCEPTS: &str = "inspector_accepts";
    pub const TIMEWAIT: &str = "inspector_timewait_sockets";
    pub const PORTS_IN_USE: &str = "inspector_ephemeral_ports_in_use";
    pub const RANGE_SIZE: &str = "inspector_ephemeral_port_range_size";
}

impl Metrics {
    pub fn new(limits: Limits) -> Self {
        Self {
            ports: Lru::new(limits.max_ports),
            destinations: Lru::new(limits.max_destinations),
            limits,
            ..Self::default()
        }
    }

    /// The `port` label of a failing `port`: its number, the least
    /// recently failing port giving way past `max_ports`.
    fn port_label(&mut self, port: u16) -> String {
        if self.limits.ports.as_ref().is_some_and(|p| p.contains(port)) {
            return port.to_string();
        }
        match self.ports.touch(port) {
            Touch::Held { evicted } => {
                if let Some(old) = evicted {
                    let old = old.to_string();
                    let moved = self
                        .bind_failures
                        .fold(|v| v[1] == old, |v| v[1] = OTHER.to_owned());
                    *self.folded.entry(name::BIND_FAILURES).or_default() += moved;
                }
                port.to_string()
            }
            Touch::Refused => {
                *self.folded.entry(name::BIND_FAILURES).or_default() += 1;
                OTHER.to_owned()
            }
        }
    }

    /// The `netns` and `destination` labels of a failing connect():
    /// the least recently failing destination gives way past
    /// `max_destinations`.
    fn destination_labels(&mut self, netns: u32, addr: IpAddr, port: u16) -> [String; 2] {
        match self.destinations.touch((netns, addr, port)) {
            Touch::Held { evicted } => {
                if let Some((ns, a, p)) = evicted {
                    let (ns, dest) = (ns.to_string(), endpoint(a, p));
                    let moved = self.connect_failures.fold(
                        |v| v[2] == ns && v[3] == dest,
                        |v| {
                            v[2] = OTHER.to_owned();
                            v[3] = OTHER.to_owned();
                        },
                    );
                    *self.folded.entry(name::CONNECT_FAILURES).or_default() += moved;
                }
                [netns.to_string(), endpoint(addr, port)]
            }
            Touch::Refused => {
                *self.folded.entry(name::CONNECT_FAILURES).or_default() += 1;
                [OTHER.to_owned(), OTHER.to_owned()]
            }
        }
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
                    let port = self.port_label(port);
                    let mut values = vec![proto.into(), port.clone(), e.to_string()];
                    values.extend(self.container_values(r, true));
                    self.bump(name::BIND_FAILURES, values, 1);
                    // Bounded values only: the explanation is free text,
                    // and goes to the log.
                    self.last_failure = Some(vec![
                        ("proto", proto.into()),
                        ("phase", phase.into()),
                        ("port", port),
                        ("errno", e.to_string()),
                    ]);
                }
            }
            RecordType::Connect => {
                if let Some(e) = failed {
                    let addr = r.req_addr.unwrap_or(r.raddr);
                    let port = r.req_port.filter(|&p| p != 0).unwrap_or(r.rport);
                    let [netns, dest] = self.destination_labels(r.netns, addr, port);
                    let mut values = vec![proto.into(), e.to_string(), netns, dest];
                    values.extend(self.container_values(r, false));
                    self.bump(name::CONNECT_FAILURES, values, 1);
                }
            }
            RecordType::TwExit => {
                let reason = r.reason.map_or("unknown", |x| x.as_str());
                self.bump(name::TIMEWAIT_EXITS, vec![reason.into()], 1);
            }
            RecordType::Reuseport => {
                if !self.members.deliver(r, proto, self.limits.max_series) {
                    *self.folded.entry(name::DELIVERIES).or_default() += 1;
                }
            }
            RecordType::State => {
                // A listener that closes leaves its group.
                if r.old_state == Some(TcpState::LISTEN) {
                    self.members.close((proto, r.netns, r.sock));
                }
            }
            RecordType::TwEnter => self.timewait_entries += 1,
            RecordType::Accept => {}
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
            if !self
                .members
                .count(&k, proto_str(k.proto), self.limits.max_series)
            {
                *self.folded.entry(name::DELIVERIES).or_default() += 1;
            }
        }
        if let Some(t) = view.timewait_counted {
            let high = &mut self.timewait_counted;
            high.entered = high.entered.max(t.entered);
            high.expired = high.expired.max(t.expired);
            high.killed = high.killed.max(t.killed);
            high.reused = high.reused.max(t.reused);
        }
        self.members.counted();
        self.members.set_queues(&view.accept_queues);
        let (folded, forget) = self
            .members
            .set_accepts(&view.accepts, self.limits.max_series);
        if folded > 0 {
            *self.folded.entry(name::ACCEPTS).or_default() += folded;
        }
        self.forgotten_accepts = forget;
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

    /// Groups (netns, port) with a member of unknown owner, not looked for
    /// yet: the agent asks the socket files ([`Metrics::set_owners`]).
    pub fn members_without_owner(&self) -> Vec<(u32, u16)> {
        self.members.without_owner()
    }

    /// The socket files of group (netns, port) as (inode, pid, comm):
    /// owners of the members that have none.
    pub fn set_owners(&mut self, netns: u32, port: u16, files: &[(u64, u32, String)]) {
        self.members.set_owners(netns, port, files);
    }

    /// Kernel socket addresses of the members the last exposition dropped
    /// (their listener closed) or that were folded.
    pub fn take_forgotten(&mut self) -> Vec<u64> {
        self.members.take_forgotten()
    }

    /// Kernel accept counts past the series limit, to forget.
    pub fn take_forgotten_accepts(&mut self) -> Vec<inspector_common::AcceptKey> {
        std::mem::take(&mut self.forgotten_accepts)
    }

    /// What the agent says of itself at the next exposition.
    pub fn set_agent(&mut self, agent: AgentView) {
        self.agent = agent;
    }

    /// The build and probes, for `inspector_build_info`.
    pub fn set_build(&mut self, build: BuildInfo) {
        self.build = Some(build);
    }

    /// The exposition in OpenMetrics text, then forgets closed group
    /// members.
    pub fn encode_openmetrics(&mut self) -> String {
        let timewait = self.timewait_rows();
        let ephemeral = self.ephemeral_rows();
        let mut reg = Registry::default();
        self.register(&mut reg);
        if let Some(tw) = timewait {
            reg.register(
                name::TIMEWAIT,
                "TCP sockets in TIME_WAIT by network namespace and local port, counted in the socket tables at scrape time (the busiest --max-ports ports; the rest in port=\"other\")",
                gauges::gauge_family(tw),
            );
        }
        self.register_ephemeral(&mut reg, ephemeral);
        self.register_namespaces(&mut reg);
        self.register_folded(&mut reg);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &reg);
        self.members.drop_closed();
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
            "Failed bind() and listen() calls by requested port and errno (the --max-ports most recently failing ports by number, older ones in port=\"other\")",
            &self.keys(&["proto", "port", "errno"], true),
            &self.bind_failures,
        );
        if let Some(labels) = &self.last_failure {
            reg.register(
                "inspector_last_bind_failure",
                "The most recent failed bind() or listen(); the log line of the failure says which kernel rule refused it and who holds the port",
                Info::new(labels.clone()),
            );
        }
        counter_family(
            reg,
            name::CONNECT_FAILURES,
            "Failed connect() calls by errno and destination (EADDRNOTAVAIL: no ephemeral port left toward it); the --max-destinations most recently failing destinations by address, older ones in netns=\"other\",destination=\"other\"",
            &self.keys(&["proto", "errno", "netns", "destination"], false),
            &self.connect_failures,
        );
        // Records and kernel counts together: `serve` counts in the
        // kernel, a replayed recording brings records.
        let mut exits = Series {
            values: self.timewait_exits.values.clone(),
        };
        let k = &self.timewait_counted;
        for (reason, n) in [
            ("expired", k.expired),
            ("killed", k.killed),
            ("reused", k.reused),
        ] {
            if n > 0 {
                *exits.values.entry(vec![reason.to_owned()]).or_default() += n;
            }
        }
        counter_family(
            reg,
            name::TIMEWAIT_EXITS,
            "TIME_WAIT sockets that ended: timer expired, killed (an RST, a SYN taken by a listener, namespace teardown) or reused by a new connection's connect()",
            &["reason"],
            &exits,
        );
        let entries = Counter::<u64>::default();
        entries.inc_by(self.timewait_entries + k.entered);
        reg.register(
            name::TIMEWAIT_ENTRIES,
            "TCP connections whose socket gave way to a timewait socket (TIME_WAIT, or FIN_WAIT2 waiting for the peer's FIN)",
            entries,
        );
        self.members.register(reg, &self.limits);
        self.register_kernel(reg);
        self.register_agent(reg);
        if let Some(b) = &self.build {
            process::register_build(reg, b);
        }
        if let Some(p) = &self.agent.process {
            process::register_process(reg, p);
        }
    }

    fn register_kernel(&self, reg: &mut Registry) {
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
                run.get_or_create(&vec![("program", label(program))])
                    .inc_by(*ns as f64 / 1e9);
            }
            reg.register(
                "inspector_bpf_program_run_seconds",
                "CPU time spent in each kernel program (kernel.bpf_stats_enabled=1)",
                run,
            );
        }
    }

    fn register_folded(&self, reg: &mut Registry) {
        let folded = Family::<Labels, Counter>::default();
        for (metric, n) in &self.folded {
            folded
                .get_or_create(&vec![("metric", (*metric).to_owned())])
                .inc_by(*n);
        }
        reg.register(
            "inspector_series_folded",
            "Folds into an 'other' label value because a label limit (--max-ports, --max-destinations, --max-series) was reached: for a counter the increments moved, for a gauge each label set once when it starts being folded",
            folded,
        );
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

/// A label value from another process or the kernel: control characters
/// escaped (the exposition would escape a newline, but not the others),
/// then cut to [`LABEL_MAX`] bytes at a character boundary.
fn label(s: &str) -> String {
    let s = crate::util::escape::text(s);
    let mut end = s.len().min(LABEL_MAX);
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

#[cfg(test)]
mod tests;
