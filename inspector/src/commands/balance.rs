//! `inspector balance PORT`: why a port's connections are split unevenly
//! between its listening sockets.
//!
//! Reads the socket iterators (listeners with their accept queues, and the
//! processes holding the port's sockets), observes the probes' `reuseport`
//! and `accept` records for the duration, reads the iterators again, and
//! hands it all to [`crate::model::balance::analyse`], which names the
//! causes. This file only reads and prints.

use std::{
    io::{self, Write as _},
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    kernel::{
        Proto, TcpState, netns,
        probe::Mode,
        sockets::{SnapshotFilter, SocketFile, SocketTable, SocketTableError},
        sys::monotonic_ns,
    },
    model::{
        balance::{self, Accept, Balance, Delivery, Listener, Observation, window::Snapshot},
        filter::{Filter, PortSet},
        record::{Record, RecordType},
    },
    pipeline::{
        Pipeline,
        drive::{self, Flow, Sink, Stop},
        source::Source,
    },
    util::escape::Escaped,
};

/// How often the ring buffer is read while observing.
const POLL: Duration = Duration::from_millis(50);

pub struct BalanceOptions {
    pub port: u16,
    /// The namespace file (`/proc/PID/ns/net`, `/run/netns/NAME`); the
    /// caller's namespace when `None`.
    pub netns: Option<PathBuf>,
    pub duration: Duration,
    pub json: bool,
    pub mode: Mode,
    /// TCP listeners, or a UDP SO_REUSEPORT group's sockets.
    pub proto: Proto,
}

/// The checks that need no kernel: one line each, before anything loads.
pub fn check(port: u32, netns: Option<&std::path::Path>) -> anyhow::Result<(u16, Option<u32>)> {
    let port = match u16::try_from(port) {
        Ok(p) if p != 0 => p,
        _ => bail!("balance: port {port} is out of range: give the listening port (1-65535)"),
    };
    let ino = match netns {
        Some(path) => Some(netns::inode(path).context("balance: --netns")?),
        None => None,
    };
    Ok((port, ino))
}

/// What the port's sockets are now: its listeners (or a UDP group's
/// sockets) with their queues, and the connected sockets with the process
/// holding each. `balance` reads it at both ends of an observation, the
/// dashboard every few seconds ([`crate::model::balance::window`]).
pub fn read(
    table: &mut SocketTable,
    netns: Option<&std::path::Path>,
    port: u16,
    proto: Proto,
) -> Result<Snapshot, SocketTableError> {
    let filter = SnapshotFilter {
        netns: None,
        port: Some(port),
        proto: Some(proto),
    };
    let sockets = match netns {
        Some(p) => table.snapshot_in(p, &filter)?,
        None => table.snapshot(&filter)?,
    };
    let files = table.files_in(netns, Some(port))?;
    let holders = |ino: u64| -> Vec<(u32, String)> {
        let mut h: Vec<(u32, String)> = files
            .iter()
            .filter(|f| f.socket.ino == Some(ino))
            .map(|f| (f.pid, f.comm.clone()))
            .collect();
        h.sort();
        h.dedup();
        h
    };
    // The sockets a connection or datagram to the port may be given to: TCP
    // listeners, or UDP sockets bound to it and not connected.
    let member = |s: &&crate::kernel::sockets::KernelSocket| match proto {
        Proto::Tcp => s.state == TcpState::LISTEN,
        Proto::Udp => s.remote.port() == 0,
    };
    let listeners = sockets
        .iter()
        .filter(|s| s.local.port() == port)
        .filter(member)
        .filter_map(|s| {
            let ino = s.ino?;
            Some(Listener {
                ino,
                local: s.local,
                reuseport: s.reuseport,
                queued: s.queued,
                queue_limit: s.queue_limit,
                drops: s.drops,
                bpf_selector: s.reuseport_prog,
                incoming_cpu: s.incoming_cpu,
                holders: holders(ino),
            })
        })
        .collect();
    let open = files
        .iter()
        .filter(|f| connected(f, port))
        .filter_map(|f| Some((f.pid, f.socket.ino?)))
        .collect();
    Ok(Snapshot {
        taken_ns: monotonic_ns(),
        listeners,
        open,
    })
}

fn connected(f: &SocketFile, port: u16) -> bool {
    f.socket.proto == Proto::Tcp
        && f.socket.local.port() == port
        && f.socket.remote.port() != 0
        && f.socket.state != TcpState::LISTEN
}

/// Keeps what the analysis reads from a batch of records.
pub fn keep(records: &mut Vec<Record>, obs: &mut Observation) {
    for r in records.drain(..) {
        if r.lport != obs.port || r.proto != Some(obs.proto) {
            continue;
        }
        match r.kind {
            RecordType::Reuseport => {
                if let Some(ino) = r.ino {
                    obs.deliveries.push(Delivery {
                        ino,
                        peer: std::net::SocketAddr::new(r.raddr, r.rport),
                    });
                }
            }
            RecordType::Accept => {
                if let Some(pid) = r.pid {
                    obs.accepts.push(Accept {
                        pid,
                        tid: r.tid.unwrap_or(pid),
                        comm: r.comm.clone().unwrap_or_default(),
                        local: std::net::SocketAddr::new(r.laddr, r.lport),
                        peer: std::net::SocketAddr::new(r.raddr, r.rport),
                        ts_ns: r.ts_ns,
                    });
                }
            }
            _ => {}
        }
    }
}

/// Collects what the analysis reads while the one loop runs, then reads
/// the iterators again and prints the verdict.
struct Observer<'a> {
    table: SocketTable,
    netns: Option<&'a std::path::Path>,
    obs: Observation,
    json: bool,
}

impl Sink for Observer<'_> {
    type Input = ();

    fn records(&mut self, _src: &mut Source, records: &mut Vec<Record>) -> anyhow::Result<Flow> {
        keep(records, &mut self.obs);
        Ok(Flow::Continue)
    }

    fn finish(&mut self, src: &mut Source) -> anyhow::Result<()> {
        self.obs.end_ns = monotonic_ns();
        let last = read(&mut self.table, self.netns, self.obs.port, self.obs.proto)?;
        self.obs.end = last.listeners;
        self.obs.open = last.open;
        let verdict = balance::analyse(&self.obs);
        let mut out = io::stdout().lock();
        if self.json {
            serde_json::to_writer(&mut out, &verdict)?;
            writeln!(out)?;
        } else {
            write!(out, "{}", text(&verdict))?;
        }
        out.flush()?;
        if let Source::Live(live) = src {
            let c = live.pipeline.counters();
            if c.dropped + c.read_errors > 0 {
                eprintln!(
                    "inspector: warning: {} events dropped and {} kernel read errors while observing: counts may be short",
                    c.dropped, c.read_errors
                );
            }
        }
        Ok(())
    }
}

/// Observes the port for the duration (or until SIGINT/SIGTERM, which
/// end it early with the verdict so far) through the one loop.
pub async fn run(opts: &BalanceOptions) -> anyhow::Result<()> {
    let (port, ino) = check(u32::from(opts.port), opts.netns.as_deref())?;
    let mut stop = Stop::new(None)?;
    let filter = Filter {
        ports: Some(
            port.to_string()
                .parse::<PortSet>()
                .map_err(anyhow::Error::msg)?,
        ),
        netns: ino,
        proto: Some(opts.proto),
        lifecycle_states: true,
        ..Filter::default()
    };
    let mut pipeline = Pipeline::new(filter, opts.mode)?;
    let mut table = SocketTable::load()?;
    let netns = opts.netns.as_deref();
    // What was emitted before the first snapshot is not part of it.
    let mut before = Vec::new();
    pipeline.poll(&mut before, false);
    let first = read(&mut table, netns, port, opts.proto)?;
    eprintln!(
        "inspector: {} mode, attached: {}; observing port {port} for {:.1} s",
        pipeline.probes.mode,
        pipeline.probes.attached.join(", "),
        opts.duration.as_secs_f64()
    );
    for m in &pipeline.probes.missing {
        eprintln!("inspector: warning: {m}");
    }
    let mut observer = Observer {
        table,
        netns,
        obs: Observation {
            port,
            proto: opts.proto,
            start_ns: monotonic_ns(),
            start: first.listeners,
            ..Observation::default()
        },
        json: opts.json,
    };
    let mut src = Source::live(pipeline, POLL)?;
    stop.set_deadline(opts.duration);
    drive::run(&mut src, &mut observer, &mut stop).await
}

/// The member table and the causes, for a terminal: every string another
/// process chose (its name, in the details too) escaped.
pub fn text(b: &Balance) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    if b.proto == Proto::Udp {
        udp_text(b, &mut s);
        causes_text(b, &mut s);
        return s;
    }
    let delivered: u64 = b.members.iter().map(|m| m.delivered).sum();
    let _ = writeln!(
        s,
        "port {}: {} listening socket(s), {} connections delivered in {:.1} s",
        b.port,
        b.members
            .iter()
            .filter(|m| m.state == balance::State::Listening)
            .count(),
        delivered,
        b.duration_s
    );
    let _ = writeln!(
        s,
        "{:>3}  {:<24} {:<22} {:<9} {:>9} {:>8} {:>9} {:>7} {:>5}  ACCEPTED BY",
        "#", "OWNER", "ADDRESS", "STATE", "DELIVERED", "ACCEPTED", "QUEUE", "DROPPED", "OPEN"
    );
    for m in &b.members {
        let owner = owner(m);
        let by: Vec<String> = m
            .accepted_by
            .iter()
            .map(|t| format!("{}/{} {}: {}", t.pid, t.tid, Escaped(&t.comm), t.count))
            .collect();
        let _ = writeln!(
            s,
            "{:>3}  {:<24} {:<22} {:<9} {:>9} {:>8} {:>9} {:>7} {:>5}  {}",
            m.id,
            owner,
            m.address.to_string(),
            m.state.as_str(),
            m.delivered,
            m.accepted,
            format!("{}/{}", m.queued, m.queue_limit),
            m.overflows,
            m.open,
            if by.is_empty() {
                "-".into()
            } else {
                by.join(", ")
            }
        );
    }
    if b.unattributed_accepts > 0 {
        let _ = writeln!(
            s,
            "{} accepts on the port matched no member (their delivery was not seen)",
            b.unattributed_accepts
        );
    }
    causes_text(b, &mut s);
    s
}

fn owner(m: &balance::Member) -> String {
    match (m.pid, m.comm.as_deref()) {
        (Some(p), Some(c)) => format!("{p}/{}", Escaped(c)),
        (Some(p), None) => p.to_string(),
        _ => "-".into(),
    }
}

/// A UDP group's table: datagrams, flows and drops per member.
fn udp_text(b: &Balance, s: &mut String) {
    use std::fmt::Write as _;
    let datagrams: u64 = b.members.iter().map(|m| m.delivered).sum();
    let flows: u64 = b.members.iter().map(|m| m.flows).sum();
    let _ = writeln!(
        s,
        "udp port {}: {} bound socket(s), {datagrams} datagrams from {flows} flows delivered in {:.1} s",
        b.port,
        b.members
            .iter()
            .filter(|m| m.state == balance::State::Listening)
            .count(),
        b.duration_s
    );
    let _ = writeln!(
        s,
        "{:>3}  {:<24} {:<22} {:<9} {:>9} {:>6} {:>7}",
        "#", "OWNER", "ADDRESS", "STATE", "DATAGRAMS", "FLOWS", "DROPPED"
    );
    for m in &b.members {
        let _ = writeln!(
            s,
            "{:>3}  {:<24} {:<22} {:<9} {:>9} {:>6} {:>7}",
            m.id,
            owner(m),
            m.address.to_string(),
            if m.state == balance::State::Listening {
                "bound"
            } else {
                "closed"
            },
            m.delivered,
            m.flows,
            m.overflows
        );
    }
}

fn causes_text(b: &Balance, s: &mut String) {
    use std::fmt::Write as _;
    let _ = writeln!(s, "causes:");
    for c in &b.causes {
        let on = c.member.map(|m| format!(" (#{m})")).unwrap_or_default();
        let _ = writeln!(s, "  {}{on}: {}", c.code.as_str(), Escaped(&c.detail));
        let _ = writeln!(s, "    advice: {}", c.advice);
    }
}
