//! The agent on the one loop: every record counted into the metrics,
//! recorded (`--record`) and, when it is a failure, logged once per kind;
//! every scrape answered from the metrics and what the kernel says at
//! that moment.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{
    RangeCache,
    http::{self, Format, Scrape},
    kernel_accepts, kernel_members, log,
    metrics::{self, KernelView, Metrics},
    namespaces::Namespaces,
    tcp_tables,
};
use crate::{
    kernel::{Proto, sockets::SocketTable},
    model::{
        ephemeral::DestKey,
        filter::PortSet,
        record::{Record, RecordType},
    },
    pipeline::{
        drive::{Flow, Sink},
        source::Source,
    },
    recording::Recorder,
    util::escape::Escaped,
};

/// Scrapes this close together share one answer: a client asking in a
/// loop costs one exposition per interval, not one per request.
const CACHE_FOR: Duration = Duration::from_millis(250);

pub(super) struct Agent {
    pub metrics: Metrics,
    pub recorder: Option<Recorder>,
    pub log: log::Limiter,
    /// The last answer, for scrapers that come within CACHE_FOR of it.
    pub cached: Option<(Format, Instant, String)>,
    pub scrapes: mpsc::Receiver<Scrape>,
    pub sockets: Option<SocketTable>,
    pub ranges: RangeCache,
    /// The namespaces whose socket tables a scrape reads.
    pub namespaces: Namespaces,
    pub http_stats: Arc<http::Stats>,
    pub ports: Option<PortSet>,
}

impl Agent {
    /// Records, and the recorder's schedule: a write error stops the
    /// recording (logged once, counted), never the agent.
    fn record(&mut self, src: &Source, records: &[Record], last: bool) {
        let now = Instant::now();
        for r in records {
            log_failure(&mut self.log, r, now);
            self.namespaces.note(r);
            if let Some(rec) = &mut self.recorder {
                rec.push(r);
            }
            self.metrics.apply(r);
        }
        if let Some(rec) = &mut self.recorder {
            match rec.turn_or_stop(|n| src.stats(n, last), last) {
                Ok(false) => {}
                Ok(true) => eprintln!(
                    "inspector: recording again in {} ({} records were lost while it was stopped)",
                    rec.out.path().display(),
                    rec.lost
                ),
                Err(e) => eprintln!(
                    "inspector: error: {}; recording stopped, serving goes on; it tries again in {} s",
                    crate::util::errors::chain(&e),
                    crate::recording::RETRY_AFTER.as_secs()
                ),
            }
        }
    }

    /// The exposition for one scrape, with the kernel read now.
    fn expose(&mut self, src: &mut Source, format: Format) -> String {
        if let Some((f, at, body)) = &self.cached
            && *f == format
            && at.elapsed() < CACHE_FOR
        {
            return body.clone();
        }
        let recorder = self.recorder.as_ref();
        let http = &self.http_stats;
        self.metrics.set_agent(metrics::AgentView {
            record_errors: recorder.map_or(0, |r| r.errors),
            records_lost: recorder.map_or(0, |r| r.lost),
            recording: recorder.map(|r| !r.stopped()),
            log_suppressed: self.log.suppressed,
            http_evicted: http.evicted.load(Ordering::Relaxed),
            http_refused: http.refused.load(Ordering::Relaxed),
            http_timed_out: http.timed_out.load(Ordering::Relaxed),
            http_unauthorized: http.unauthorized.load(Ordering::Relaxed),
            process: crate::kernel::sys::process_stats(),
        });
        let pods = src.pipeline().and_then(|p| p.pods.as_mut());
        let watched = self.namespaces.refresh(pods).to_vec();
        let Tables {
            timewait,
            toward,
            queues,
            gone,
        } = self.read_tables(&watched);
        let mut namespaces = self.metrics.client_namespaces();
        namespaces.extend(watched.iter().map(|w| w.ino));
        let port_ranges = self.ranges.read(&namespaces, &self.namespaces.paths());
        let Some(pipeline) = src.pipeline() else {
            return String::new();
        };
        let members = kernel_members(
            &pipeline.probes,
            &mut pipeline.cgroups,
            pipeline.pods.as_mut(),
        );
        let (accepts, exited) = kernel_accepts(&pipeline.probes);
        pipeline.probes.forget_accepts(&exited);
        let listeners: Vec<u64> = accepts.iter().map(|(k, _)| k.listener).collect();
        let probes = &pipeline.probes;
        self.metrics.set_kernel(KernelView {
            counters: pipeline.counters(),
            events_read: pipeline.seen,
            run_time_ns: probes.run_times(),
            timewait,
            outcomes: probes.aggregate.then(|| probes.outcomes()),
            members,
            port_ranges,
            ephemeral_in_use: toward,
            netns: self.namespaces.view(gone),
            accept_queues: queues,
            accepts,
            timewait_counted: probes.timewait_counts(),
        });
        self.find_owners();
        let body = match format {
            Format::OpenMetrics => self.metrics.encode_openmetrics(),
            Format::Text => self.metrics.encode_text(),
        };
        let mut forget = self.metrics.take_forgotten_accepts();
        for sock in self.metrics.take_forgotten() {
            pipeline.probes.forget_deliveries(sock);
            // A listener that left its group: its accepts go with it.
            if listeners.contains(&sock) {
                forget.extend(
                    pipeline
                        .probes
                        .accepts()
                        .into_iter()
                        .map(|(k, _)| k)
                        .filter(|k| k.listener == sock),
                );
            }
        }
        pipeline.probes.forget_accepts(&forget);
        self.cached = Some((format, Instant::now(), body.clone()));
        body
    }
}

/// What a scrape reads from the watched namespaces' TCP tables; `None`
/// where not one namespace could be read.
#[derive(Default)]
struct Tables {
    timewait: Option<Vec<(u32, Proto, u16, u64)>>,
    toward: Option<Vec<(DestKey, u32)>>,
    queues: std::collections::HashMap<(u32, u64), metrics::AcceptQueue>,
    gone: usize,
}

impl Agent {
    /// TIME_WAIT sockets, ports in use per destination and SO_REUSEPORT
    /// accept queues of each watched namespace, from one walk of its TCP
    /// table, and how many could not be read (gone since found).
    fn read_tables(&mut self, watched: &[super::namespaces::Watched]) -> Tables {
        let mut out = Tables::default();
        let Some(table) = self.sockets.as_mut() else {
            return out;
        };
        let (mut timewait, mut toward, mut read) = (vec![], vec![], false);
        for w in watched {
            match tcp_tables(table, w.path.as_deref(), self.ports.as_ref()) {
                Ok(t) => {
                    read = true;
                    let netns = w.ino;
                    timewait.extend(
                        t.timewait
                            .into_iter()
                            .map(|(p, port, n)| (netns, p, port, n)),
                    );
                    toward.extend(
                        t.toward
                            .into_iter()
                            .map(|(addr, port, n)| (DestKey { netns, addr, port }, n)),
                    );
                    out.queues.extend(t.queues);
                }
                // The agent's own: a failure worth saying.
                Err(e) if w.path.is_none() || watched.len() == 1 => {
                    eprintln!("inspector: warning: TCP socket snapshot: {e}");
                }
                Err(_) => out.gone += 1,
            }
        }
        // Busiest first over every namespace: the port label limit keeps
        // the ports that matter.
        timewait.sort_by(|a, b| b.3.cmp(&a.3).then((a.0, a.2).cmp(&(b.0, b.2))));
        out.timewait = read.then_some(timewait);
        out.toward = read.then_some(toward);
        out
    }

    /// Owners of SO_REUSEPORT members that were listening before the
    /// agent started (it saw no bind of theirs): the process holding each
    /// socket's file, from the task_file iterator, a few groups per scrape
    /// and each group once.
    fn find_owners(&mut self) {
        /// Iterator walks per scrape: each one visits every process's files.
        const PER_SCRAPE: usize = 4;
        let Some(table) = self.sockets.as_mut() else {
            return;
        };
        for (netns, port) in self
            .metrics
            .members_without_owner()
            .into_iter()
            .take(PER_SCRAPE)
        {
            let files: Vec<(u64, u32, String)> = match table.files_of(netns, Some(port)) {
                Ok(files) => files
                    .into_iter()
                    .filter_map(|f| Some((f.socket.ino?, f.pid, f.comm)))
                    .collect(),
                Err(e) => {
                    eprintln!("inspector: warning: owners of port {port} (netns {netns}): {e}");
                    Vec::new()
                }
            };
            self.metrics.set_owners(netns, port, &files);
        }
    }
}

impl Sink for Agent {
    type Input = Scrape;

    fn records(&mut self, src: &mut Source, records: &mut Vec<Record>) -> anyhow::Result<Flow> {
        self.record(src, records, false);
        Ok(Flow::Continue)
    }

    /// The next scrape; `None` once the HTTP server has gone (it only
    /// ends by failing), which ends the agent.
    fn input(&mut self) -> impl std::future::Future<Output = Option<Scrape>> {
        self.scrapes.recv()
    }

    fn on_input(&mut self, src: &mut Source, (format, reply): Scrape) -> anyhow::Result<Flow> {
        let body = self.expose(src, format);
        // The scraper may have given up: nothing to do then.
        let _ = reply.send(body);
        Ok(Flow::Continue)
    }

    fn finish(&mut self, src: &mut Source) -> anyhow::Result<()> {
        self.record(src, &[], true);
        Ok(())
    }
}

/// Logs a failed bind (and a UDP bind that shares an address across
/// uids) once per kind and interval ([`log::Limiter`]).
fn log_failure(log: &mut log::Limiter, r: &Record, now: Instant) {
    // The owner by name, not pid: a service in a restart loop fails under
    // a new pid each time, and is one story.
    let owner = || r.comm.as_deref().unwrap_or("?").to_owned();
    if let (Some(e), Some(why)) = (r.errno.filter(|e| e.is_failure()), &r.explanation)
        && r.kind == RecordType::Bind
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
                Escaped(why)
            );
        }
    }
}
