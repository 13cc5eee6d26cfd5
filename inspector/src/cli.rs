//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::{kernel::Proto, kernel::probe::Mode, model::filter::PortSet, recording::Moment};

#[derive(Debug, Parser)]
#[command(
    name = "inspector",
    version,
    long_version = crate::build_info::long_version(),
    about = "Watch the Linux kernel decide who gets a port: bind decisions, TIME_WAIT, SO_REUSEPORT."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub filters: FilterArgs,
    /// How the probes attach: fentry/fexit on the deciding kernel functions,
    /// BTF tracepoints, or auto (fentry where the kernel accepts it).
    #[arg(long, value_enum, default_value_t = Mode::Auto, env = "INSPECTOR_MODE", global = true)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The live dashboard (the default when no command is given).
    Dashboard(DashboardArgs),
    /// Print every kernel decision as it happens (text or NDJSON).
    Trace(TraceArgs),
    /// Replay the documented scenarios on this kernel: claim versus what happened.
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Who holds a port, and which kernel rule decides a bind() and listen() on it.
    Explain(ExplainArgs),
    /// Record the trace to disk: compressed NDJSON in rotating files, each
    /// opening with a snapshot of the socket tables, for `trace --replay`
    /// and `dashboard --replay`.
    Record(RecordArgs),
    /// Export Prometheus metrics over HTTP (GET /metrics, GET /healthz): an always-on agent.
    Serve(ServeArgs),
    /// Why a port's connections are split unevenly between its listening
    /// sockets (SO_REUSEPORT workers, shared accept queues; a UDP
    /// SO_REUSEPORT group with --proto udp): observes, then names the cause
    /// per member.
    Balance(BalanceArgs),
}

/// `inspector balance PORT`; the namespace comes from the global `--netns`.
#[derive(Debug, Args, Default, Clone)]
pub struct BalanceArgs {
    /// The listening port (1-65535); a UDP group's bound port with --proto udp.
    #[arg(value_name = "PORT")]
    pub target_port: u32,
    /// Seconds to observe.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// One JSON object: members and causes.
    #[arg(long)]
    pub json: bool,
}

impl BalanceArgs {
    /// The domain request: these arguments with the global `--netns`; the
    /// trace filters that mean nothing here are refused, not ignored.
    pub fn to_options(
        &self,
        f: &FilterArgs,
        mode: Mode,
    ) -> anyhow::Result<crate::commands::balance::BalanceOptions> {
        let ignored = [
            ("--port", f.port.is_some()),
            ("--pid", f.pid.is_some()),
            ("--comm", f.comm.is_some()),
            ("--failures-only", f.failures_only),
            ("--cgroup", f.cgroup.is_some()),
            ("--container", f.container.is_some()),
        ];
        if let Some((name, _)) = ignored.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "balance does not take {name}: it watches one port (the PORT argument; TCP, or UDP with --proto udp), in the namespace of --netns"
            );
        }
        let (port, _) = crate::commands::balance::check(self.target_port, f.netns.as_deref())?;
        let duration = match std::time::Duration::try_from_secs_f64(self.duration) {
            Ok(d) if !d.is_zero() => d,
            _ => anyhow::bail!(
                "balance: --duration must be a positive number of seconds, got {}",
                self.duration
            ),
        };
        Ok(crate::commands::balance::BalanceOptions {
            port,
            netns: f.netns.clone(),
            duration,
            json: self.json,
            mode,
            proto: f.proto.unwrap_or(crate::kernel::Proto::Tcp),
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum ScenarioCommand {
    /// List the catalog.
    List {
        /// One JSON object per scenario.
        #[arg(long)]
        json: bool,
    },
    /// Run scenarios (by name or number), each in its own network namespace.
    Run {
        /// Scenario names or numbers.
        #[arg(
            value_name = "NAME",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        names: Vec<String>,
        /// Run the whole catalog.
        #[arg(long)]
        all: bool,
        /// One JSON object per result (schema: docs/scenario-schema.md).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Default, Clone)]
pub struct FilterArgs {
    /// Only these ports (local, remote or requested): 80,443,8000-8100.
    #[arg(long, value_name = "PORTS", global = true)]
    pub port: Option<PortSet>,
    /// Only events of sockets owned (or last owned) by this process.
    #[arg(long, global = true)]
    pub pid: Option<u32>,
    /// Only events of sockets owned by processes with this command name.
    /// The kernel keeps 15 bytes of a name: a longer one matches by those.
    #[arg(long, global = true)]
    pub comm: Option<String>,
    /// Only this network namespace: /proc/PID/ns/net or /run/netns/NAME.
    #[arg(long, value_name = "PATH", global = true)]
    pub netns: Option<PathBuf>,
    /// Only this protocol.
    #[arg(long, value_enum, global = true)]
    pub proto: Option<Proto>,
    /// Only failed bind/listen/connect decisions.
    #[arg(long, global = true)]
    pub failures_only: bool,
    /// Only events of this cgroup v2 subtree: a path prefix relative to the
    /// v2 root (/system.slice/nginx.service) or under its mount.
    #[arg(long, value_name = "PATH", global = true)]
    pub cgroup: Option<String>,
    /// Only events of containers whose id (or machine name) starts so.
    #[arg(long, value_name = "ID", global = true)]
    pub container: Option<String>,
}

#[derive(Debug, Args, Default, Clone)]
pub struct TraceArgs {
    /// One JSON object per line (schema: docs/trace-schema.md).
    #[arg(long)]
    pub json: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS", conflicts_with = "replay")]
    pub duration: Option<f64>,
    /// Each connection's life too: its successful connect() and accept(),
    /// and its state changes into SYN_RECV and CLOSE (a connection entering
    /// TIME_WAIT by its tw_enter alone). Without it `trace` reports the
    /// decisions: every bind/listen, failed connect() and accept(),
    /// TIME_WAIT entry and exit, SO_REUSEPORT delivery and listener change.
    #[arg(long)]
    pub connections: bool,
    /// Every TCP state change (SYN_SENT, ESTABLISHED, FIN_WAIT1, ...), and
    /// each connection's life as with --connections.
    #[arg(long)]
    pub states: bool,
    /// Read a recording (`inspector record`: one file, or its directory)
    /// instead of the kernel.
    #[arg(long, value_name = "PATH")]
    pub replay: Option<PathBuf>,
    /// With --replay: from this moment of the recording, an RFC 3339 time
    /// (2026-12-06T07:00:00Z) or an offset from its start (+90s, +5m).
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub since: Option<Moment>,
    /// With --replay: up to this moment (same forms as --since).
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub until: Option<Moment>,
}

/// `inspector dashboard`.
#[derive(Debug, Args, Default, Clone)]
pub struct DashboardArgs {
    /// Show a recording (`inspector record`: one file, or its directory)
    /// instead of the kernel.
    #[arg(long, value_name = "PATH")]
    pub replay: Option<PathBuf>,
    /// Replay at this many times the recorded pace.
    #[arg(long, value_name = "N", default_value_t = 1.0, requires = "replay")]
    pub speed: f64,
    /// Replay one second per `n` key instead of in time.
    #[arg(long, requires = "replay", conflicts_with = "speed")]
    pub step: bool,
    /// With --replay: from this moment of the recording, an RFC 3339 time
    /// (2026-12-06T07:00:00Z) or an offset from its start (+90s, +5m).
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub since: Option<Moment>,
    /// With --replay: up to this moment (same forms as --since).
    #[arg(long, value_name = "TIME", requires = "replay")]
    pub until: Option<Moment>,
}

/// `inspector record`.
#[derive(Debug, Args, Clone)]
pub struct RecordArgs {
    /// Directory of the recording files (created if missing).
    #[arg(long, value_name = "DIR")]
    pub output: PathBuf,
    /// A file is closed before it passes this size (its header, its
    /// snapshot of the socket tables and one frame of records go in
    /// whatever the size).
    #[arg(long, value_name = "BYTES", default_value_t = crate::recording::DEFAULT_MAX_SIZE,
          value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_size: u64,
    /// At most this many files are kept; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = crate::recording::DEFAULT_MAX_FILES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_files: usize,
    /// Record into a directory another user owns or others may write in
    /// (refused by default: recordings hold every process's names and
    /// destinations). Files are still only created anew, mode 0600, and
    /// never through a link.
    #[arg(long)]
    pub allow_shared_dir: bool,
}

/// `inspector serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Address and port of the HTTP server.
    #[arg(long, value_name = "ADDR:PORT", default_value = crate::commands::serve::DEFAULT_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Ports outside --port that get their own `port` label value: the
    /// most recently failing ones; the least recently failing gives way to
    /// a new one and its series fold into port="other".
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_ports: usize,
    /// Connect destinations (netns, address:port) that get their own label
    /// values in inspector_connect_failures_total: the most recently
    /// failing ones; older ones fold into "other".
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_destinations: usize,
    /// Label sets per metric; past it, increments go to one series whose
    /// labels read "other".
    #[arg(long, value_name = "N", default_value_t = 2048)]
    pub max_series: usize,
    /// Adds a `container` label (container id or machine name, empty
    /// outside one) to inspector_bind_failures_total and
    /// inspector_reuseport_deliveries_total; bounded by --max-series.
    #[arg(long)]
    pub container_label: bool,
    /// Adds `namespace`, `pod` and `container` (name) labels to the bind
    /// and connect failures, the SO_REUSEPORT deliveries and the
    /// ephemeral-port gauges, read from the kubelet's /var/log/pods and
    /// /var/log/containers directories (no API access). On by itself where
    /// /var/log/pods exists.
    #[arg(long)]
    pub kubernetes: bool,
    /// The kubelet's pod log directory, for --kubernetes (its
    /// `containers` sibling is read too); for tests.
    #[arg(long, value_name = "DIR", hide = true)]
    pub pods_dir: Option<PathBuf>,
    /// Adds a `socket` label (the socket inode) to
    /// inspector_reuseport_deliveries_total. Off by default: an inode is
    /// new at every reconnect, and each one is a new series.
    #[arg(long)]
    pub label_socket_inode: bool,
    /// Also record the trace to this directory, as `inspector record`
    /// does with its default bounds. A write error (a full disk) stops the
    /// recording, not the agent: it is logged, counted in
    /// inspector_record_errors_total, and the recording starts again in a
    /// new file 30 s later.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// With --record: accept a directory another user owns or others may
    /// write in (see `inspector record --allow-shared-dir`).
    #[arg(long, requires = "record")]
    pub allow_shared_dir: bool,
    /// TLS and basic authentication for the endpoint, in the format of
    /// Prometheus exporters' web config (tls_server_config: cert_file,
    /// key_file, client_auth_type, client_ca_file, min_version;
    /// basic_auth_users: bcrypt hashes; http_server_config: headers).
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
}

/// `inspector explain PORT`; the namespace comes from the global `--netns`
/// or `--pid`, the protocol from `--udp`/`--tcp` or the global `--proto`;
/// the other global filters are refused.
#[derive(Debug, Args, Default, Clone)]
pub struct ExplainArgs {
    /// The port (1-65535).
    #[arg(value_name = "PORT", required_unless_present = "connect")]
    pub target_port: Option<u32>,
    /// Explain a TCP connect() to HOST:PORT (an IP literal; [::1]:PORT for
    /// IPv6) instead: the ephemeral range toward it and the verdict.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: Option<String>,
    /// A TCP socket (the default).
    #[arg(long)]
    pub tcp: bool,
    /// A UDP socket.
    #[arg(long)]
    pub udp: bool,
    /// Local address of the would-be socket (default 0.0.0.0, or :: with --v6only).
    #[arg(long, value_name = "IP")]
    pub addr: Option<std::net::IpAddr>,
    /// With SO_REUSEADDR.
    #[arg(long)]
    pub reuseaddr: bool,
    /// With SO_REUSEPORT.
    #[arg(long)]
    pub reuseport: bool,
    /// With IPV6_V6ONLY.
    #[arg(long)]
    pub v6only: bool,
    /// As this uid (default: the caller's).
    #[arg(long, value_name = "N")]
    pub uid: Option<u32>,
    /// One JSON object: holders, bind, listen.
    #[arg(long)]
    pub json: bool,
    /// Also bind (and listen) for real in the namespace and compare.
    #[arg(long)]
    pub probe: bool,
    /// Rows of holders (sockets rolled up by state, owner and options) the
    /// text lists; --json always lists every socket.
    #[arg(long, value_name = "N", default_value_t = crate::explain::DEFAULT_ROWS, conflicts_with = "all")]
    pub limit: usize,
    /// List every row of holders, however many.
    #[arg(long)]
    pub all: bool,
}

impl ExplainArgs {
    /// The domain request: these arguments with the global `--netns`/`--pid`.
    /// The trace filters that mean nothing to one would-be socket are
    /// refused rather than ignored; `--proto` picks its protocol.
    pub fn to_request(&self, f: &FilterArgs) -> anyhow::Result<crate::explain::Request> {
        let ignored = [
            ("--port", f.port.is_some()),
            ("--comm", f.comm.is_some()),
            ("--failures-only", f.failures_only),
        ];
        if let Some((name, _)) = ignored.iter().find(|(_, set)| *set) {
            anyhow::bail!(
                "explain does not take {name}: it asks about one port (the PORT argument), in the namespace of --netns or --pid (--cgroup and --container narrow the holders listed)"
            );
        }
        let (tcp, udp) = match f.proto {
            Some(crate::kernel::Proto::Udp) if self.tcp => {
                anyhow::bail!("explain: --tcp and --proto udp disagree")
            }
            Some(crate::kernel::Proto::Tcp) if self.udp => {
                anyhow::bail!("explain: --udp and --proto tcp disagree")
            }
            Some(crate::kernel::Proto::Udp) => (false, true),
            Some(crate::kernel::Proto::Tcp) => (true, false),
            None => (self.tcp, self.udp),
        };
        Ok(crate::explain::Request {
            port: self.target_port.unwrap_or(0),
            tcp,
            udp,
            addr: self.addr,
            netns: f.netns.clone(),
            pid: f.pid,
            reuseaddr: self.reuseaddr,
            reuseport: self.reuseport,
            v6only: self.v6only,
            uid: self.uid,
            json: self.json,
            probe: self.probe,
            cgroup: f.cgroup.as_deref().map(|c| {
                crate::kernel::cgroup::normalize_filter(
                    c,
                    crate::kernel::cgroup::v2_mount().as_deref(),
                )
            }),
            container: f.container.clone(),
            connect: self.connect.clone(),
            limit: (!self.all).then_some(self.limit),
            comm: None,
        })
    }
}

#[cfg(test)]
mod explain_args {
    use super::*;

    #[test]
    fn explain_honours_proto_and_refuses_filters_it_cannot_use() {
        let args = ExplainArgs {
            target_port: Some(8090),
            ..ExplainArgs::default()
        };
        let udp = FilterArgs {
            proto: Some(crate::kernel::Proto::Udp),
            ..FilterArgs::default()
        };
        let r = args.to_request(&udp).expect("--proto udp is taken");
        assert!(r.udp && !r.tcp);
        let both = ExplainArgs {
            tcp: true,
            ..args.clone()
        };
        assert!(both.to_request(&udp).is_err(), "--tcp with --proto udp");
        let comm = FilterArgs {
            comm: Some("nginx".into()),
            ..FilterArgs::default()
        };
        let e = args.to_request(&comm).expect_err("--comm is refused");
        assert!(e.to_string().contains("--comm"), "{e}");
    }

    #[test]
    fn explain_lists_a_screenful_unless_told_otherwise() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).expect("parses");
            match cli.command {
                Some(Command::Explain(a)) => a.to_request(&cli.filters).expect("request"),
                _ => panic!("not explain"),
            }
        };
        let r = parse(&["inspector", "explain", "8080"]);
        assert_eq!(r.limit, Some(crate::explain::DEFAULT_ROWS));
        assert_eq!(
            parse(&["inspector", "explain", "8080", "--limit", "5"]).limit,
            Some(5)
        );
        assert_eq!(
            parse(&["inspector", "explain", "8080", "--all"]).limit,
            None
        );
        assert!(
            Cli::try_parse_from(["inspector", "explain", "1", "--all", "--limit", "3"]).is_err()
        );
    }
}
