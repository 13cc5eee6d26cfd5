//! `inspector serve`: an always-on exporter for production hosts. The
//! probes feed [`metrics::Metrics`]; Prometheus scrapes `GET /metrics`
//! ([`http`]). Each scrape also reads the kernel's counters, the programs'
//! run time and a socket-table snapshot for the TIME_WAIT gauge.

pub mod http;
pub mod log;
pub mod metrics;
pub mod web;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tokio::{signal::unix::SignalKind, sync::mpsc};

use crate::{
    explain,
    kernel::Proto,
    kernel::probe::{LoadOptions, Mode},
    kernel::sockets::{Entry, SnapshotFilter, SocketTable},
    model::ephemeral::PortRange,
    model::filter::Filter,
    pipeline::Pipeline,
};

use self::{
    http::{Format, Scrape},
    metrics::{KernelMember, KernelView, Limits, Metrics},
};

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

pub struct ServeOptions {
    pub filter: Filter,
    /// The `--netns` file: the TIME_WAIT snapshot is taken there.
    pub netns_path: Option<PathBuf>,
    pub mode: Mode,
    pub listen: SocketAddr,
    pub limits: Limits,
    /// `--record DIR`: also record the trace there (`inspector record`).
    pub record: Option<PathBuf>,
    /// `--allow-shared-dir` with `--record`.
    pub record_shared: bool,
    /// `--web-config FILE`: TLS and basic authentication.
    pub web_config: Option<PathBuf>,
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
        let d = if e.bind.result == "ok" {
            e.listen
        } else {
            e.bind
        };
        (d.result != "ok").then(|| {
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
    let mut sockets = match SocketTable::load() {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("inspector: warning: no TIME_WAIT gauge (socket iterators: {e})");
            None
        }
    };
    let ring = pipeline.readiness()?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut sigint = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let (scrape_tx, mut scrapes) = mpsc::channel::<Scrape>(16);
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

    let mut recorder = (opts.record.as_deref())
        .map(|dir| {
            crate::recording::Recorder::open(dir, Default::default(), &pipeline, opts.record_shared)
        })
        .transpose()?;
    let mut log = log::Limiter::default();
    // The last answer, for scrapers that come within CACHE_FOR of it.
    let mut cached: Option<(Format, Instant, String)> = None;
    let mut metrics = Metrics::new(opts.limits);
    if aggregate {
        metrics.count_decisions_in_kernel();
    }
    // The agent's own namespace always has its range exported.
    let own_netns = match opts.netns_path.as_deref() {
        Some(p) => crate::kernel::netns::inode(p).ok(),
        None => crate::kernel::netns::current_netns().ok(),
    };
    let mut ranges = RangeCache {
        own: own_netns.map(|ino| {
            let path = opts
                .netns_path
                .clone()
                .unwrap_or_else(|| "/proc/self/ns/net".into());
            (ino, path)
        }),
        ..RangeCache::default()
    };
    let mut annotator = crate::pipeline::annotate::Annotator::default();
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut server = std::pin::pin!(server);
    loop {
        let mut scrape = None;
        let done = tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard?;
                guard.clear_ready();
                false
            }
            _ = tick.tick() => false,
            s = scrapes.recv() => { scrape = s; false }
            _ = sigterm.recv() => true,
            _ = sigint.recv() => true,
            r = &mut server => {
                // The server only ends on its own by failing.
                r.context("HTTP server task")?.context("HTTP server")?;
                true
            }
        };
        pipeline.poll(&mut batch, done);
        annotator.annotate(&mut batch, Some(&pipeline.tracker));
        let now = Instant::now();
        for r in batch.drain(..) {
            log_failure(&mut log, &r, now);
            if let Some(rec) = &mut recorder {
                rec.push(&r);
            }
            metrics.apply(&r);
        }
        if let Some(rec) = &mut recorder {
            match rec.turn_or_stop(&pipeline, done) {
                Ok(false) => {}
                Ok(true) => eprintln!(
                    "inspector: recording again in {} ({} records were lost while it was stopped)",
                    rec.out.path().display(),
                    rec.lost
                ),
                Err(e) => eprintln!(
                    "inspector: error: {}; recording stopped, serving goes on; it tries again in {} s",
                    crate::error_chain(&e),
                    crate::recording::RETRY_AFTER.as_secs()
                ),
            }
        }
        if let Some((format, reply)) = scrape {
            if let Some((f, at, body)) = &cached
                && *f == format
                && at.elapsed() < CACHE_FOR
            {
                let _ = reply.send(body.clone());
                continue;
            }
            metrics.set_agent(metrics::AgentView {
                record_errors: recorder.as_ref().map_or(0, |r| r.errors),
                records_lost: recorder.as_ref().map_or(0, |r| r.lost),
                recording: recorder.as_ref().map(|r| !r.stopped()),
                log_suppressed: log.suppressed,
                http_evicted: http_stats
                    .evicted
                    .load(std::sync::atomic::Ordering::Relaxed),
                http_refused: http_stats
                    .refused
                    .load(std::sync::atomic::Ordering::Relaxed),
                http_timed_out: http_stats
                    .timed_out
                    .load(std::sync::atomic::Ordering::Relaxed),
                http_unauthorized: http_stats
                    .unauthorized
                    .load(std::sync::atomic::Ordering::Relaxed),
            });
            let tables = sockets.as_mut().and_then(|t| {
                tcp_tables(t, opts.netns_path.as_deref(), ports.as_ref())
                    .map_err(|e| eprintln!("inspector: warning: TCP socket snapshot: {e}"))
                    .ok()
            });
            let (timewait, toward) = match tables {
                Some(t) => (Some(t.timewait), Some(t.toward)),
                None => (None, None),
            };
            let mut namespaces = metrics.client_namespaces();
            namespaces.extend(own_netns);
            let port_ranges = ranges.read(&namespaces);
            let members = kernel_members(&pipeline.probes, &mut pipeline.cgroups);
            let probes = &pipeline.probes;
            metrics.set_kernel(KernelView {
                counters: pipeline.counters(),
                events_read: pipeline.seen,
                run_time_ns: probes.run_times(),
                timewait,
                outcomes: probes.aggregate.then(|| probes.outcomes()),
                members,
                port_ranges,
                ephemeral_in_use: toward.zip(own_netns).map(|(toward, netns)| {
                    toward
                        .into_iter()
                        .map(|(addr, port, n)| {
                            (crate::model::ephemeral::DestKey { netns, addr, port }, n)
                        })
                        .collect()
                }),
            });
            let body = match format {
                Format::OpenMetrics => metrics.encode_openmetrics(),
                Format::Text => metrics.encode_text(),
            };
            for sock in metrics.take_forgotten() {
                pipeline.probes.forget_deliveries(sock);
            }
            cached = Some((format, Instant::now(), body.clone()));
            // The scraper may have given up: nothing to do then.
            let _ = reply.send(body);
        }
        if done {
            break;
        }
    }
    let _ = stop_tx.send(());
    // Requests in flight get their answer; do not wait for slow clients.
    let _ = tokio::time::timeout(Duration::from_secs(2), &mut server).await;
    let c = pipeline.counters();
    eprintln!(
        "inspector: {} events read, {} dropped (ring buffer full), {} kernel errors",
        pipeline.seen, c.dropped, c.read_errors
    );
    Ok(())
}

/// Scrapes this close together share one answer: a client asking in a
/// loop costs one exposition per interval, not one per request.
const CACHE_FOR: Duration = Duration::from_millis(250);

/// Logs a failed bind (and a UDP bind that shares an address across
/// uids) once per kind and interval ([`log::Limiter`]).
fn log_failure(log: &mut log::Limiter, r: &crate::model::record::Record, now: Instant) {
    // The owner by name, not pid: a service in a restart loop fails under
    // a new pid each time, and is one story.
    let owner = || r.comm.as_deref().unwrap_or("?").to_owned();
    if let (Some(e), Some(why)) = (r.errno.filter(|e| e.is_failure()), &r.explanation)
        && r.kind == crate::model::record::RecordType::Bind
    {
        let port = r.req_port.unwrap_or(r.lport);
        let kind = log::Kind {
            what: "bind",
            port,
            errno: e.to_string(),
            owner: owner(),
        };
        if let Some(left_out) = log.admit(kind, now) {
            eprintln!("{}", log::failure_line(r, why, left_out));
        }
    }
    if let Some(why) = r
        .explanation
        .as_deref()
        .filter(|w| w.starts_with("hijack risk"))
        && r.errno.is_none()
    {
        let kind = log::Kind {
            what: "hijack",
            port: r.lport,
            errno: String::new(),
            owner: owner(),
        };
        if log.admit(kind, now).is_some() {
            eprintln!(
                "inspector: udp bind by pid {}: {}",
                r.pid.map_or_else(|| "?".into(), |p| p.to_string()),
                crate::util::escape::Escaped(why)
            );
        }
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
        // Never set for serve (a `trace` option).
        lifecycle_states: _,
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
fn kernel_members(
    probes: &crate::kernel::probe::Probes,
    cgroups: &mut crate::kernel::cgroup::Resolver,
) -> Vec<KernelMember> {
    probes
        .deliveries()
        .into_iter()
        .map(|(sock, d)| {
            let owner = probes.owner(sock);
            KernelMember {
                sock,
                proto: Proto::from_kernel(d.proto),
                lport: d.lport,
                netns: d.netns,
                ino: d.ino,
                pid: owner.map(|o| o.pid),
                comm: owner.map(|o| crate::model::record::comm(&o.comm)),
                container: owner
                    .and_then(|o| cgroups.resolve(o.cgroup))
                    .and_then(|r| r.container.clone()),
                deliveries: d.count,
            }
        })
        .collect()
}

/// Namespaces' port ranges, read again every [`RangeCache::EVERY`]: a
/// sysctl read in another namespace costs a thread that enters it.
#[derive(Default)]
struct RangeCache {
    read: BTreeMap<u32, (Instant, Option<PortRange>)>,
    /// The agent's namespace and a path to it (`--netns`): no search.
    own: Option<(u32, std::path::PathBuf)>,
}

impl RangeCache {
    const EVERY: Duration = Duration::from_secs(60);
    /// Namespaces read per scrape at most; the others wait for the next.
    const PER_SCRAPE: usize = 8;

    fn read(&mut self, namespaces: &BTreeSet<u32>) -> Vec<(u32, PortRange)> {
        self.read.retain(|ns, _| namespaces.contains(ns));
        let due: Vec<u32> = namespaces
            .iter()
            .copied()
            .filter(|ns| {
                self.read
                    .get(ns)
                    .is_none_or(|(at, _)| at.elapsed() >= Self::EVERY)
            })
            .take(Self::PER_SCRAPE)
            .collect();
        for ns in due {
            let range = match &self.own {
                Some((own, path)) if *own == ns => {
                    crate::commands::dashboard::kernel::port_range_in(path)
                }
                _ => crate::commands::dashboard::kernel::port_range(ns),
            };
            self.read.insert(ns, (Instant::now(), range));
        }
        self.read
            .iter()
            .filter_map(|(ns, (_, r))| r.map(|r| (*ns, r)))
            .collect()
    }
}

/// What the metrics take from one walk of the TCP socket table of the
/// agent's network namespace (or `netns`): the iterators walk one
/// namespace's tables.
struct TcpTables {
    /// TIME_WAIT sockets by (proto, local port), busiest first.
    timewait: Vec<(Proto, u16, u64)>,
    /// Local ports held toward each destination by client sockets
    /// (connected or in TIME_WAIT, on a local port nobody listens on).
    toward: Vec<(std::net::IpAddr, u16, u32)>,
}

fn tcp_tables(
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
        .filter(|s| s.state == inspector_common::TCP_LISTEN)
        .map(|s| s.local.port())
        .collect();
    let mut counts: HashMap<u16, u64> = HashMap::new();
    let mut toward: HashMap<(std::net::IpAddr, u16), u32> = HashMap::new();
    for s in &socks {
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
            && s.state != inspector_common::TCP_LISTEN
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
    Ok(TcpTables { timewait, toward })
}
