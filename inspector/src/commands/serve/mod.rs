//! `inspector serve`: an always-on exporter for production hosts. The
//! probes feed [`metrics::Metrics`]; Prometheus scrapes `GET /metrics`
//! ([`http`]). Each scrape also reads the kernel's counters, the programs'
//! run time and a socket-table snapshot for the TIME_WAIT gauge.

mod agent;
pub mod http;
pub mod log;
pub mod metrics;
mod namespaces;
pub mod web;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::sync::mpsc;

use crate::{
    explain,
    kernel::probe::{LoadOptions, Mode},
    kernel::sockets::{Entry, SnapshotFilter, SocketTable},
    kernel::{Proto, TcpState},
    model::ephemeral::PortRange,
    model::filter::Filter,
    pipeline::{
        Pipeline,
        drive::{self, Stop},
        source::Source,
    },
};

use self::{
    http::Scrape,
    metrics::{AcceptQueue, BuildInfo, KernelMember, Limits, Metrics},
};

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

pub struct ServeOptions {
    pub filter: Filter,
    /// The `--netns` file: the TIME_WAIT and ephemeral-port gauges read
    /// only that namespace (else every namespace found).
    pub netns_path: Option<PathBuf>,
    /// Where the kubelet's pod log directories are (`--pods-dir`), for the
    /// pod labels; else `/var/log/pods` where it exists.
    pub pods_dir: Option<PathBuf>,
    pub mode: Mode,
    pub listen: SocketAddr,
    pub limits: Limits,
    /// `--record DIR`: also record the trace there (`inspector record`).
    pub record: Option<PathBuf>,
    /// `--allow-shared-dir` with `--record`.
    pub record_shared: bool,
    /// `--web-config FILE`: TLS and basic authentication.
    pub web_config: Option<PathBuf>,
    /// For `inspector_build_info`.
    pub version: &'static str,
    pub commit: &'static str,
}

/// The one-line reason `addr` cannot be listened on, from the explain
/// predictor when it can tell.
pub fn in_use_message(addr: SocketAddr) -> String {
    let req = explain::Request {
        port: u32::from(addr.port()),
        tcp: true,
        addr: Some(addr.ip()),
        ..explain::Request::default()
    };
    let verdict = explain::explain(&req).ok().and_then(|e| {
        let d = if e.bind.result.is_ok() {
            e.listen
        } else {
            e.bind
        };
        (!d.result.is_ok()).then(|| {
            let held: Vec<String> = d
                .blockers
                .iter()
                .take(3)
                .map(|b| {
                    let owner = match (b.pid, &b.comm) {
                        (Some(p), Some(c)) => format!("pid {p} {c}"),
                        _ => "no owner".into(),
                    };
                    format!(
                        "{} {} ({owner})",
                        b.state,
                        explain::fmt_addr(b.laddr, b.lport)
                    )
                })
                .collect();
            let mut line = format!("{} ({}: {})", d.result, d.rule.function, d.rule.condition);
            if !held.is_empty() {
                line.push_str(&format!("; held by {}", held.join(", ")));
            }
            line
        })
    });
    match verdict {
        Some(v) => format!(
            "{addr} is in use: {v}; choose another with --listen (details: inspector explain {})",
            addr.port()
        ),
        None => format!(
            "{addr} is in use; choose another with --listen (see `inspector explain {}`)",
            addr.port()
        ),
    }
}

pub async fn run(opts: ServeOptions) -> anyhow::Result<()> {
    // The signals first: a SIGTERM right after the banner is a clean stop.
    let mut stop = Stop::new(None)?;
    // The web config first, then the port: a mistake in either is the
    // likeliest and the cheapest to report, before any program is loaded.
    let web = opts
        .web_config
        .as_deref()
        .map(web::WebConfig::load)
        .transpose()?
        .map(std::sync::Arc::new);
    let listener = match tokio::net::TcpListener::bind(opts.listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            anyhow::bail!(in_use_message(opts.listen))
        }
        Err(e) => return Err(e).with_context(|| format!("listening on {}", opts.listen)),
    };
    // The port the kernel gave (`--listen 127.0.0.1:0`), not the one asked.
    let bound = listener.local_addr().unwrap_or(opts.listen);
    let tls = web.as_ref().is_some_and(|w| w.tls.is_some());
    let auth = web.as_ref().is_some_and(|w| w.auth.is_some());
    if !(bound.ip().is_loopback() || tls && auth) {
        eprintln!(
            "inspector: warning: listening on {bound} beyond loopback {}: the metrics name processes, pids and the sockets they hold; give --web-config with tls_server_config and basic_auth_users, or listen on 127.0.0.1",
            match (tls, auth) {
                (false, false) => "without TLS or authentication",
                (true, false) => "without authentication",
                _ => "without TLS (passwords cross the network in the clear)",
            }
        );
    }
    let ports = opts.filter.ports.clone();
    // Counting in the kernel skips the user-space filters: only without
    // them (the netns filter works in the kernel) are the counts the
    // metrics'.
    let aggregate = counts_in_kernel(&opts.filter);
    let mut pipeline = Pipeline::with_options(
        opts.filter,
        LoadOptions {
            mode: opts.mode,
            aggregate,
            ..LoadOptions::default()
        },
    )?;
    pipeline.load_explanations();
    eprintln!(
        "inspector: serving {}://{bound}/metrics{}; {} mode, attached: {}; filters: {}",
        if tls { "https" } else { "http" },
        if auth { " (basic auth)" } else { "" },
        pipeline.probes.mode,
        pipeline.probes.attached.join(", "),
        pipeline.filter.describe()
    );
    for m in &pipeline.probes.missing {
        eprintln!("inspector: warning: {m}");
    }
    let mut pipeline = pipeline;
    if let Some(dir) = &opts.pods_dir {
        pipeline.pods = Some(crate::kernel::pods::PodResolver::new(dir));
    }
    let mut limits = opts.limits;
    limits.kubernetes |= pipeline.pods.is_some();
    if limits.kubernetes && pipeline.pods.is_none() {
        eprintln!(
            "inspector: warning: --kubernetes but no {}: the namespace and pod labels stay empty",
            crate::kernel::pods::PODS_DIR
        );
    }
    let sockets = match SocketTable::load() {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("inspector: warning: no TIME_WAIT gauge (socket iterators: {e})");
            None
        }
    };
    let (scrape_tx, scrapes) = mpsc::channel::<Scrape>(16);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let http_stats = std::sync::Arc::new(http::Stats::default());
    let server = tokio::spawn(http::serve(
        listener,
        scrape_tx,
        web,
        http::Limits::default(),
        http_stats.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let header =
        crate::recording::Header::new(pipeline.probes.mode.to_string(), pipeline.filter.describe());
    let recorder = (opts.record.as_deref())
        .map(|dir| {
            crate::recording::Recorder::open(dir, Default::default(), &header, opts.record_shared)
        })
        .transpose()?;
    let mut metrics = Metrics::new(limits);
    if aggregate {
        metrics.count_decisions_in_kernel();
    }
    metrics.set_build(BuildInfo {
        version: opts.version.to_owned(),
        commit: opts.commit.to_owned(),
        mode: pipeline.probes.mode.to_string(),
        fallback_reason: fallback_reason(opts.mode, pipeline.probes.mode).to_owned(),
        kernel: crate::kernel::sys::kernel_release().unwrap_or_default(),
        missing_hooks: pipeline.probes.missing.len(),
    });
    // The agent's own namespace always has its range exported.
    let own_netns = match opts.netns_path.as_deref() {
        Some(p) => crate::kernel::netns::inode(p).ok(),
        None => crate::kernel::netns::current_netns().ok(),
    };
    let namespaces = namespaces::Namespaces::new(
        own_netns.map(|ino| {
            let path = opts
                .netns_path
                .clone()
                .unwrap_or_else(|| "/proc/self/ns/net".into());
            (ino, path)
        }),
        opts.netns_path.is_some(),
    );
    let mut agent = agent::Agent {
        metrics,
        recorder,
        log: log::Limiter::default(),
        cached: None,
        scrapes,
        sockets,
        ranges: RangeCache::default(),
        namespaces,
        http_stats,
        ports,
    };
    let mut src = Source::live(pipeline, Duration::from_millis(200))?;
    let served = drive::run(&mut src, &mut agent, &mut stop).await;
    let _ = stop_tx.send(());
    // Requests in flight get their answer; do not wait for slow clients.
    // The server only ends on its own by failing.
    let mut server = std::pin::pin!(server);
    if let Ok(r) = tokio::time::timeout(Duration::from_secs(2), &mut server).await {
        r.context("HTTP server task")?.context("HTTP server")?;
    }
    served?;
    if let Some(pipeline) = src.pipeline() {
        let c = pipeline.counters();
        eprintln!(
            "inspector: {} events read, {} dropped (ring buffer full), {} kernel errors",
            pipeline.seen, c.dropped, c.read_errors
        );
    }
    Ok(())
}

/// Why the programs are not attached as fentry/fexit, as one of a few
/// words (the log says it in full): a label value must be bounded.
fn fallback_reason(asked: Mode, used: Mode) -> &'static str {
    match (asked, used) {
        (_, Mode::Fentry) => "none",
        (Mode::Tracepoint, _) => "requested",
        _ => "fentry_refused",
    }
}

/// Whether the metrics can be counted in the kernel under `filter`: only
/// with no filter but the network namespace, which the kernel applies.
fn counts_in_kernel(filter: &Filter) -> bool {
    let Filter {
        ports,
        pid,
        comm,
        netns: _,
        proto,
        failures_only,
        cgroup,
        container,
        // Never set for serve (`trace` options).
        lifecycle_states: _,
        decisions_only: _,
    } = filter;
    ports.is_none()
        && pid.is_none()
        && comm.is_none()
        && proto.is_none()
        && !failures_only
        && cgroup.is_none()
        && container.is_none()
}

/// The SO_REUSEPORT members the kernel counted, with their owners as the
/// kernel remembers them (from their bind/listen).
pub(super) fn kernel_members(
    probes: &crate::kernel::probe::Probes,
    cgroups: &mut crate::kernel::cgroup::Resolver,
    mut pods: Option<&mut crate::kernel::pods::PodResolver>,
) -> Vec<KernelMember> {
    probes
        .deliveries()
        .into_iter()
        .map(|(sock, d)| {
            let owner = probes.owner(sock);
            let resolved = owner.and_then(|o| Some((o.cgroup, cgroups.resolve(o.cgroup)?.clone())));
            let pod = resolved.as_ref().and_then(|(id, r)| {
                r.container.as_ref()?;
                pods.as_deref_mut()?.resolve(*id, &r.path)
            });
            KernelMember {
                sock,
                proto: Proto::from_kernel(d.proto),
                lport: d.lport,
                netns: d.netns,
                ino: d.ino,
                pid: owner.map(|o| o.pid),
                comm: owner.map(|o| crate::model::record::comm(&o.comm)),
                container: resolved.and_then(|(_, r)| r.container),
                pod,
                deliveries: d.count,
            }
        })
        .collect()
}

/// The accepts the kernel counted by (listening socket, process): those
/// of processes alive now, and the keys of the ones that have exited, to
/// forget (their series would otherwise stay until the kernel's LRU
/// evicts them).
pub(super) fn kernel_accepts(
    probes: &crate::kernel::probe::Probes,
) -> (
    Vec<(inspector_common::AcceptKey, inspector_common::AcceptCount)>,
    Vec<inspector_common::AcceptKey>,
) {
    let (live, gone): (Vec<_>, Vec<_>) = probes
        .accepts()
        .into_iter()
        .partition(|(k, _)| std::path::Path::new(&format!("/proc/{}", k.tgid)).exists());
    (live, gone.into_iter().map(|(k, _)| k).collect())
}

/// Namespaces' port ranges, read again every [`RangeCache::EVERY`]: a
/// sysctl read in another namespace costs a thread that enters it.
#[derive(Default)]
pub(super) struct RangeCache {
    pub(super) read: BTreeMap<u32, (Instant, Option<PortRange>)>,
}

impl RangeCache {
    const EVERY: Duration = Duration::from_secs(60);
    /// Namespaces read per scrape at most; the others wait for the next
    /// (those never read first).
    const PER_SCRAPE: usize = 32;

    /// The ranges of `namespaces`, entered through `paths` where known
    /// (else looked for).
    pub(super) fn read(
        &mut self,
        namespaces: &BTreeSet<u32>,
        paths: &HashMap<u32, std::path::PathBuf>,
    ) -> Vec<(u32, PortRange)> {
        self.read.retain(|ns, _| namespaces.contains(ns));
        let mut due: Vec<(bool, u32)> = namespaces
            .iter()
            .copied()
            .filter(|ns| {
                self.read
                    .get(ns)
                    .is_none_or(|(at, _)| at.elapsed() >= Self::EVERY)
            })
            .map(|ns| (self.read.contains_key(&ns), ns))
            .collect();
        due.sort_unstable();
        for (_, ns) in due.into_iter().take(Self::PER_SCRAPE) {
            let range = match paths.get(&ns) {
                Some(path) => crate::kernel::netns::port_range_in(path),
                None => crate::kernel::netns::port_range(ns),
            };
            self.read.insert(ns, (Instant::now(), range));
        }
        self.read
            .iter()
            .filter_map(|(ns, (_, r))| r.map(|r| (*ns, r)))
            .collect()
    }
}

/// What the metrics take from one walk of the TCP socket table of one
/// network namespace (the agent's, or `netns`): the iterators walk one
/// namespace's tables.
pub(super) struct TcpTables {
    /// TIME_WAIT sockets by (proto, local port), busiest first.
    pub(super) timewait: Vec<(Proto, u16, u64)>,
    /// Local ports held toward each destination by client sockets
    /// (connected or in TIME_WAIT, on a local port nobody listens on).
    pub(super) toward: Vec<(std::net::IpAddr, u16, u32)>,
    /// The accept queue of each SO_REUSEPORT listener, by (netns, socket
    /// inode): the key SO_REUSEPORT members are known by.
    pub(super) queues: Vec<((u32, u64), AcceptQueue)>,
}

pub(super) fn tcp_tables(
    table: &mut SocketTable,
    netns: Option<&std::path::Path>,
    ports: Option<&crate::model::filter::PortSet>,
) -> Result<TcpTables, crate::kernel::sockets::SocketTableError> {
    let filter = SnapshotFilter {
        proto: Some(Proto::Tcp),
        ..SnapshotFilter::default()
    };
    let socks = match netns {
        Some(path) => table.snapshot_in(path, &filter)?,
        None => table.snapshot(&filter)?,
    };
    let listening: std::collections::HashSet<u16> = socks
        .iter()
        .filter(|s| s.state == TcpState::LISTEN)
        .map(|s| s.local.port())
        .collect();
    let mut counts: HashMap<u16, u64> = HashMap::new();
    let mut toward: HashMap<(std::net::IpAddr, u16), u32> = HashMap::new();
    let mut queues = Vec::new();
    for s in &socks {
        if s.state == TcpState::LISTEN
            && s.reuseport
            && let Some(ino) = s.ino
        {
            queues.push((
                (s.netns, ino),
                AcceptQueue {
                    length: s.queued,
                    limit: s.queue_limit,
                    drops: u64::from(s.drops),
                },
            ));
        }
        if let Entry::TimeWait { substate, .. } = s.entry
            && substate == inspector_common::TCP_TIME_WAIT
            && ports.is_none_or(|p| p.contains(s.local.port()))
        {
            *counts.entry(s.local.port()).or_default() += 1;
        }
        // A client's side: connected, not a handshake in a listener's
        // queue, and not on a port someone listens on (an accepted
        // connection's). Ports are held per destination
        // (`__inet_hash_connect()` checks the 4-tuple).
        if s.remote.port() != 0
            && !matches!(s.entry, Entry::Request)
            && s.state != TcpState::LISTEN
            && !listening.contains(&s.local.port())
        {
            *toward.entry((s.remote.ip(), s.remote.port())).or_default() += 1;
        }
    }
    let mut timewait: Vec<_> = counts
        .into_iter()
        .map(|(port, n)| (Proto::Tcp, port, n))
        .collect();
    // Busiest first, so the per-port label limit keeps the ports that matter.
    timewait.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
    let toward = toward
        .into_iter()
        .map(|((addr, port), n)| (addr, port, n))
        .collect();
    Ok(TcpTables {
        timewait,
        toward,
        queues,
    })
}
