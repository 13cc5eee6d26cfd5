//! `inspector explain PORT`: who holds a port, and which kernel rule
//! decides a would-be `bind()` and `listen()` on it.
//!
//! `rules` predicts the kernel's decision from the sockets on the port
//! (no I/O); `advice` words what would change it; `inventory` lists those
//! sockets from the kernel's own tables (BPF socket and descriptor-table
//! iterators: exact flags and owners, no process touched; sock_diag where
//! iterators are refused). This module puts them together for a
//! [`Request`].

pub mod advice;
pub mod connect;
pub mod inventory;
pub mod rules;

use std::{
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::Serialize;
use socket2::{Domain, Socket, Type};

use self::{
    inventory::{FLAGS_KERNEL, Holder, Inventory, InventoryError, Source},
    rules::{Port, Proto, Sock, Verdict},
};
use crate::{
    kernel::netns::{self, NetnsError},
    kernel::sys::{self, BindSpec},
};

/// `addr:port`, with brackets for IPv6.
pub fn fmt_addr(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Bad command-line input: one line naming the problem and the fix.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("writing the output")]
    Output(#[from] io::Error),
}

/// What to explain: the would-be socket and the namespace to look in.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub port: u32,
    pub tcp: bool,
    pub udp: bool,
    pub addr: Option<IpAddr>,
    pub netns: Option<PathBuf>,
    pub pid: Option<u32>,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub uid: Option<u32>,
    pub json: bool,
    pub probe: bool,
    /// Show only holders whose owner's cgroup path starts with this
    /// (`--cgroup`), or whose container id does (`--container`); the
    /// verdict still counts every holder.
    pub cgroup: Option<String>,
    pub container: Option<String>,
    /// `--connect HOST:PORT`: explain a connect() to it instead of a bind().
    pub connect: Option<String>,
}

/// The validated request: the socket to predict and where.
#[derive(Debug, Clone)]
struct Plan {
    sock: Sock,
    netns: Option<PathBuf>,
}

fn plan(req: &Request) -> Result<Plan, ExplainError> {
    let bad = |m: String| Err(ExplainError::Input(m));
    if req.port == 0 || req.port > 65535 {
        return bad(format!(
            "port {} is out of range: give a port from 1 to 65535",
            req.port
        ));
    }
    if req.tcp && req.udp {
        return bad("--tcp and --udp conflict: explain one protocol at a time".into());
    }
    if req.netns.is_some() && req.pid.is_some() {
        return bad(
            "--netns and --pid conflict: give the namespace file, or a process whose namespace to use, not both"
                .into(),
        );
    }
    let netns = match (&req.netns, req.pid) {
        (Some(p), _) => {
            if !p.exists() {
                return bad(format!(
                    "no network namespace {}: give /proc/PID/ns/net or /run/netns/NAME",
                    p.display()
                ));
            }
            Some(p.clone())
        }
        (None, Some(pid)) => {
            let p = PathBuf::from(format!("/proc/{pid}/ns/net"));
            if !p.exists() {
                return bad(format!("no process with pid {pid} (check `ps -p {pid}`)"));
            }
            Some(p)
        }
        (None, None) => None,
    };
    if req.uid == Some(u32::MAX) {
        return bad(
            "uid 4294967295 is (uid_t)-1, which the kernel treats as \"no uid\" (setresuid() leaves the uid unchanged): give a real uid"
                .into(),
        );
    }
    let addr = match req.addr {
        Some(a) => a,
        None if req.v6only => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    if req.v6only && addr.is_ipv4() {
        return bad(format!(
            "--v6only applies to IPv6 sockets: give an IPv6 --addr (such as ::), not {addr}"
        ));
    }
    let proto = if req.udp { Proto::Udp } else { Proto::Tcp };
    let mut sock = Sock::new(proto, addr, req.port as u16);
    sock.reuseaddr = Some(req.reuseaddr);
    sock.reuseport = Some(req.reuseport);
    sock.v6only = req.v6only;
    sock.uid = req.uid.unwrap_or_else(sys::geteuid);
    Ok(Plan { sock, netns })
}

/// A blocking socket, named the way the inventory names it.
#[derive(Debug, Clone, Serialize)]
pub struct Blocker {
    pub cookie: u64,
    pub laddr: IpAddr,
    pub lport: u16,
    pub raddr: IpAddr,
    pub rport: u16,
    pub state: &'static str,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The condition that makes this socket block the call.
    pub why: String,
}

/// A verdict with its blockers resolved to sockets.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub result: String,
    pub rule: rules::Rule,
    pub blockers: Vec<Blocker>,
    pub advice: Vec<String>,
    pub if_unknown_flags_set: Option<String>,
    pub if_chain_order_differs: Option<String>,
    pub if_udp_walk_differs: Option<String>,
}

/// What a real bind (and listen) in the namespace returned (`--probe`).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub bind: String,
    pub listen: Option<String>,
    /// Whether the probe agrees with the prediction.
    pub agrees: bool,
    /// It does not, but the kernel returned the alternative the
    /// prediction stated (unknown flags set, or another hash chain order).
    pub agrees_with_alternative: bool,
}

/// The would-be socket, in the trace schema's field names.
#[derive(Debug, Clone, Serialize)]
pub struct Wanted {
    pub proto: &'static str,
    pub family: &'static str,
    pub laddr: IpAddr,
    pub lport: u16,
    pub reuseaddr: bool,
    pub reuseport: bool,
    pub v6only: bool,
    pub uid: u32,
}

/// UDP sockets sharing one address through SO_REUSEADDR under different
/// uids: `udp_lib_lport_inuse()` lets any SO_REUSEADDR socket join whatever
/// its uid, and for unicast `__udp4_lib_lookup()` / `__udp6_lib_lookup()`
/// deliver to one of them (the one bound last), not to all.
#[derive(Debug, Clone, Serialize)]
pub struct HijackRisk {
    pub laddr: IpAddr,
    pub lport: u16,
    /// The distinct uids of the sockets sharing the address.
    pub uids: Vec<u32>,
    /// The sharing holders' cookies.
    pub cookies: Vec<u64>,
    /// The requested socket would join them with a uid of its own.
    pub includes_request: bool,
}

/// The whole answer (`--json` prints it as one object).
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub netns: u32,
    pub request: Wanted,
    /// Where the holders' SO_REUSEADDR/SO_REUSEPORT come from: `kernel`
    /// (socket iterators), or `sock_diag (iterators refused: ...)`.
    pub flags_source: String,
    pub holders: Vec<Holder>,
    pub bind: Decision,
    pub listen: Decision,
    pub probe: Option<ProbeResult>,
    pub hijack_risk: Vec<HijackRisk>,
    pub notes: Vec<String>,
    /// Set when the port is inside the namespace's ephemeral range
    /// (`ip_local_port_range`), where connect() picks source ports.
    pub ephemeral: Option<Ephemeral>,
}

/// A port inside the ephemeral range: `__inet_hash_connect()` may hand it
/// to any outgoing connection, and while one holds it a listener's bind()
/// fails (or succeeds on a connection's port only with SO_REUSEADDR on
/// both, never for listen()).
#[derive(Debug, Clone, Serialize)]
pub struct Ephemeral {
    pub range: [u16; 2],
    /// In `ip_local_reserved_ports`: connect() never picks it.
    pub reserved: bool,
    /// Outgoing connections using the port as their source port now.
    pub outgoing: Vec<Outgoing>,
}

/// A connection whose source port is the port asked about.
#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    pub state: &'static str,
    pub laddr: IpAddr,
    pub raddr: IpAddr,
    pub rport: u16,
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub cookie: u64,
}

/// The ephemeral-range facts of `port`: its namespace's settings and the
/// connections of `holders` that use it as their source port. A socket
/// sharing the port with a listener may be an accepted one: only when no
/// listener is on the port are its connections outgoing for sure.
fn ephemeral(
    settings: Option<&connect::Settings>,
    sock: &Sock,
    holders: &[Holder],
) -> Option<Ephemeral> {
    let s = settings?;
    if !s.in_range(sock.port) {
        return None;
    }
    let proto = sock.proto.as_str();
    let listener = holders
        .iter()
        .any(|h| h.proto == proto && h.state == "LISTEN");
    let outgoing = if listener {
        Vec::new()
    } else {
        holders
            .iter()
            .filter(|h| h.proto == proto && h.state != "CLOSE" && h.state != "LISTEN")
            .map(|h| Outgoing {
                state: h.state,
                laddr: h.laddr,
                raddr: h.raddr,
                rport: h.rport,
                pid: h.pid,
                comm: h.comm.clone(),
                cookie: h.cookie,
            })
            .collect()
    };
    Some(Ephemeral {
        range: [s.range.0, s.range.1],
        reserved: s.is_reserved(sock.port),
        outgoing,
    })
}

/// The note and advice for a port inside the ephemeral range.
fn ephemeral_note(e: &Ephemeral, port: u16) -> (String, Option<String>) {
    let [lo, hi] = e.range;
    let mut note = format!(
        "port {port} is inside the ephemeral range {lo}-{hi} (net.ipv4.ip_local_port_range){}",
        if e.reserved {
            ", but reserved (ip_local_reserved_ports): connect() does not pick it"
        } else {
            ": connect() may pick it as a source port at any time"
        }
    );
    for o in e.outgoing.iter().take(3) {
        let who = match (o.pid, &o.comm) {
            (Some(p), Some(c)) => format!("pid {p} {c}"),
            _ => "no owner".into(),
        };
        note.push_str(&format!(
            "; held now as the source port of {} {} -> {} ({who})",
            o.state,
            fmt_addr(o.laddr, port),
            fmt_addr(o.raddr, o.rport)
        ));
    }
    let advice = (!e.reserved).then(|| {
        format!(
            "keep connect() off the port: add it to net.ipv4.ip_local_reserved_ports (sysctl -w net.ipv4.ip_local_reserved_ports={port}), or move the range"
        )
    });
    (note, advice)
}

fn decision(v: Verdict, holders: &[&Holder]) -> Decision {
    Decision {
        blockers: v
            .blockers
            .iter()
            .zip(v.why.iter())
            .filter_map(|(&i, why)| holders.get(i).map(|h| (h, why)))
            .map(|(h, why)| Blocker {
                cookie: h.cookie,
                laddr: h.laddr,
                lport: h.lport,
                raddr: h.raddr,
                rport: h.rport,
                state: h.state,
                pid: h.pid,
                comm: h.comm.clone(),
                why: why.clone(),
            })
            .collect(),
        result: v.result,
        rule: v.rule,
        advice: v.advice,
        if_unknown_flags_set: v.if_unknown_flags_set,
        if_chain_order_differs: v.if_chain_order_differs,
        if_udp_walk_differs: v.if_udp_walk_differs,
    }
}

/// Collects the inventory and predicts; `--probe` also binds for real.
pub fn explain(req: &Request) -> Result<Explanation, ExplainError> {
    explain_with(req, &mut Source::open(), |_| true)
}

/// [`explain`] from an already loaded `source`, with only the holders
/// `keep` accepts (the automatic explanation of a failure drops those
/// created after it, and names TIME_WAIT holders' last owners).
pub fn explain_with(
    req: &Request,
    source: &mut Source,
    mut keep: impl FnMut(&mut Holder) -> bool,
) -> Result<Explanation, ExplainError> {
    let plan = plan(req)?;
    // The range is read before the sockets: a failed read leaves the
    // answer without the ephemeral note, never without its verdict.
    let settings = connect::Settings::read_in(plan.netns.as_deref()).ok();
    let mut inv = source.collect(plan.netns.as_deref(), plan.sock.port)?;
    inv.holders.retain_mut(|h| keep(h));
    let eph = ephemeral(settings.as_ref(), &plan.sock, &inv.holders);
    let mut e = predict(&plan, inv, req.probe);
    if let Some(eph) = eph {
        let (note, advice) = ephemeral_note(&eph, plan.sock.port);
        e.notes.push(note);
        if let Some(a) = advice {
            if !eph.outgoing.is_empty() && !e.bind.advice.contains(&a) {
                e.bind.advice.push(a);
            } else {
                e.notes.push(a);
            }
        }
        e.ephemeral = Some(eph);
    }
    Ok(e)
}

/// UDP addresses shared through SO_REUSEADDR by more than one uid,
/// counting the requested socket when it would join.
fn hijack_risks(holders: &[&Holder], sock: &Sock, bind_ok: bool) -> Vec<HijackRisk> {
    if sock.proto != Proto::Udp {
        return Vec::new();
    }
    let mut groups: Vec<(IpAddr, i32, Vec<&Holder>)> = Vec::new();
    for h in holders {
        // Connected sockets match on the 4-tuple first: only unconnected
        // ones compete for the address's unicast traffic.
        if h.reuseaddr != Some(true) || h.uid.is_none() || h.state != "CLOSE" {
            continue;
        }
        match groups
            .iter_mut()
            .find(|(a, dev, _)| *a == h.laddr && *dev == h.bound_dev_if)
        {
            Some((_, _, g)) => g.push(h),
            None => groups.push((h.laddr, h.bound_dev_if, vec![h])),
        }
    }
    groups
        .into_iter()
        .filter_map(|(laddr, _, g)| {
            let mut uids: Vec<u32> = g.iter().filter_map(|h| h.uid).collect();
            let includes_request = bind_ok && sock.reuseaddr == Some(true) && laddr == sock.addr;
            if includes_request {
                uids.push(sock.uid);
            }
            uids.sort_unstable();
            uids.dedup();
            (uids.len() > 1).then(|| HijackRisk {
                laddr,
                lport: sock.port,
                uids,
                cookies: g.iter().map(|h| h.cookie).collect(),
                includes_request,
            })
        })
        .collect()
}

fn predict(plan: &Plan, inv: Inventory, probe: bool) -> Explanation {
    let Inventory {
        holders,
        netns,
        unprivileged_port_start,
        flags_source,
        udp_walk,
    } = inv;
    let sock = &plan.sock;
    // Only sockets of the same protocol share a port's bind table.
    let same: Vec<&Holder> = holders
        .iter()
        .filter(|h| h.proto == sock.proto.as_str())
        .collect();
    let mut port = Port::from_inventory(same.iter().map(|h| h.to_rule_sock()).collect());
    port.unprivileged_port_start = unprivileged_port_start;
    port.udp_walk = udp_walk;
    let (bind, listen) = port.predict(sock);
    let mut notes = Vec::new();
    if sock.proto == Proto::Tcp && sock.reuseport == Some(true) && !bind.is_ok() {
        notes.push(
            "the kernel's per-port SO_REUSEPORT cache (tb->fastreuseport) can let a SO_REUSEPORT bind through that the full check refuses; it depends on the order of earlier binds, which no inventory shows: --probe tries it"
                .to_owned(),
        );
    }
    if flags_source != FLAGS_KERNEL {
        notes.push(format!(
            "holders from sock_diag, which does not report SO_REUSEADDR/SO_REUSEPORT ({flags_source}): their flags are unknown, assumed unset; `if_unknown_flags_set` gives the result if they were set"
        ));
    }
    let hijack_risk = hijack_risks(&same, sock, bind.is_ok());
    for r in &hijack_risk {
        let uids: Vec<String> = r.uids.iter().map(u32::to_string).collect();
        notes.push(format!(
            "hijack risk: UDP {} is shared through SO_REUSEADDR by uids {}{}; udp_lib_lport_inuse() does not compare uids for SO_REUSEADDR, and __udp4_lib_lookup() gives unicast datagrams to one socket, the one bound last",
            fmt_addr(r.laddr, r.lport),
            uids.join(", "),
            if r.includes_request {
                " (counting the requested socket)"
            } else {
                ""
            }
        ));
    }
    let probe = probe.then(|| {
        let (b, l) = probe_bind(plan);
        let agrees = b == bind.result
            && (b != "ok" || sock.proto == Proto::Udp || l.as_deref() == Some(&listen.result));
        let stated = |v: &rules::Verdict, got: &str| {
            got == v.result
                || v.if_unknown_flags_set.as_deref() == Some(got)
                || v.if_chain_order_differs.as_deref() == Some(got)
                || v.if_udp_walk_differs.as_deref() == Some(got)
        };
        let agrees_with_alternative = !agrees
            && stated(&bind, &b)
            && (b != "ok"
                || sock.proto == Proto::Udp
                || l.as_deref().is_some_and(|l| stated(&listen, l)));
        ProbeResult {
            bind: b,
            listen: l,
            agrees,
            agrees_with_alternative,
        }
    });
    Explanation {
        netns,
        request: Wanted {
            proto: sock.proto.as_str(),
            family: if sock.is_v6() { "inet6" } else { "inet" },
            laddr: sock.addr,
            lport: sock.port,
            reuseaddr: sock.reuseaddr == Some(true),
            reuseport: sock.reuseport == Some(true),
            v6only: sock.v6only,
            uid: sock.uid,
        },
        flags_source,
        bind: decision(bind, &same),
        listen: decision(listen, &same),
        holders,
        probe,
        hijack_risk,
        notes,
        ephemeral: None,
    }
}

/// A real bind (and listen, for TCP) with the requested options in the
/// target namespace, as the caller's uid; the socket is closed at once.
fn probe_bind(plan: &Plan) -> (String, Option<String>) {
    if plan.sock.uid != sys::geteuid() {
        let sock = plan.sock.clone();
        return match netns::in_netns(plan.netns.as_deref(), move || {
            probe_as(&sock).map_err(ProbeError::Child)
        }) {
            Ok(r) => r,
            Err(e) => (format!("skipped: {}", crate::util::errors::chain(&e)), None),
        };
    }
    let sock = plan.sock.clone();
    let run = move || -> Result<(String, Option<String>), ProbeError> {
        let name = |r: io::Result<()>| match r {
            Ok(()) => "ok".to_owned(),
            Err(e) => crate::kernel::Errno::of(&e).to_string(),
        };
        let domain = if sock.is_v6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let ty = match sock.proto {
            Proto::Tcp => Type::STREAM,
            Proto::Udp => Type::DGRAM,
        };
        let s = Socket::new(domain, ty, None).map_err(ProbeError::Socket)?;
        let set = s
            .set_reuse_address(sock.reuseaddr == Some(true))
            .and_then(|()| s.set_reuse_port(sock.reuseport == Some(true)))
            .and_then(|()| {
                if sock.is_v6() {
                    s.set_only_v6(sock.v6only)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = set {
            return Ok((format!("skipped: setting the options failed: {e}"), None));
        }
        let b = name(s.bind(&std::net::SocketAddr::new(sock.addr, sock.port).into()));
        let l = (b == "ok" && sock.proto == Proto::Tcp).then(|| name(s.listen(1)));
        Ok((b, l))
    };
    match netns::in_netns(plan.netns.as_deref(), run) {
        Ok(r) => r,
        Err(e) => (format!("skipped: {}", crate::util::errors::chain(&e)), None),
    }
}

/// Why a `--probe` could not run.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("creating the probe socket")]
    Socket(#[source] io::Error),
    #[error("the probe child could not run")]
    Child(#[source] io::Error),
}

/// The probe as another uid: a forked child (of this thread, so in its
/// namespace) drops to `sock.uid` (gid too), binds, listens, reports the
/// errnos and exits.
fn probe_as(sock: &Sock) -> io::Result<(String, Option<String>)> {
    let listen = sock.proto == Proto::Tcp;
    let spec = BindSpec {
        addr: std::net::SocketAddr::new(sock.addr, sock.port),
        stream: listen,
        reuseaddr: sock.reuseaddr == Some(true),
        reuseport: sock.reuseport == Some(true),
        v6only: sock.is_v6().then_some(sock.v6only),
        listen: listen.then_some(1),
        count_on_release: false,
    };
    let report = sys::fork_as(sock.uid, &spec, false)?.report;
    if report.setup != 0 {
        return Ok((
            "skipped: could not become that uid or create the socket".to_owned(),
            None,
        ));
    }
    let name = |e: Option<i32>| match e {
        Some(0) => "ok".to_owned(),
        Some(e) => crate::kernel::Errno::from(e).to_string(),
        None => "skipped: the child did not report it".to_owned(),
    };
    let bind_ok = report.bind == Some(0);
    Ok((
        name(report.bind),
        (bind_ok && listen).then(|| name(report.listen)),
    ))
}

fn opts(reuseaddr: Option<bool>, reuseport: Option<bool>, v6only: Option<bool>) -> String {
    let f = |v: Option<bool>, c: char| match v {
        Some(true) => c,
        Some(false) => '.',
        None => '?',
    };
    format!(
        "{}{}{}",
        f(reuseaddr, 'R'),
        f(reuseport, 'r'),
        f(v6only, '6')
    )
}

/// The one-screen text form.
pub fn write_text(e: &Explanation, out: &mut impl Write) -> io::Result<()> {
    // Owners' names and cgroup paths are theirs to choose; they and the
    // sentences quoting them are escaped for the terminal.
    use crate::util::escape::Escaped as Esc;
    let r = &e.request;
    writeln!(
        out,
        "port {}/{} in netns {}: {} socket{} (flags from {})",
        r.lport,
        r.proto,
        e.netns,
        e.holders.len(),
        if e.holders.len() == 1 { "" } else { "s" },
        e.flags_source
    )?;
    if !e.holders.is_empty() {
        writeln!(
            out,
            "{:<5} {:<11} {:<28} {:<28} {:<22} {:<6} {:<4} FLAGS FROM",
            "PROTO", "STATE", "LOCAL", "REMOTE", "OWNER", "UID", "OPTS"
        )?;
        for h in &e.holders {
            let owner = match (h.pid, &h.comm, h.last_pid, &h.last_comm) {
                (Some(p), Some(c), ..) => format!("{p} {}", Esc(c)),
                (Some(p), None, ..) => p.to_string(),
                (None, _, Some(p), Some(c)) => format!("(was {p} {})", Esc(c)),
                _ => "-".into(),
            };
            let mut tail = h.flags_source.clone();
            if let Some(ms) = h.expires_ms {
                tail.push_str(&format!(", expires in {:.1} s", f64::from(ms) / 1000.0));
            }
            match (&h.container, &h.cgroup) {
                (Some(id), _) => tail.push_str(&format!(
                    ", container {}",
                    Esc(id.get(..id.len().min(12)).unwrap_or(id))
                )),
                (None, Some(path)) if path != "/" => {
                    tail.push_str(&format!(", cgroup {}", Esc(path)));
                }
                _ => {}
            }
            writeln!(
                out,
                "{:<5} {:<11} {:<28} {:<28} {:<22} {:<6} {:<4} {}",
                h.proto,
                h.state,
                fmt_addr(h.laddr, h.lport),
                fmt_addr(h.raddr, h.rport),
                owner,
                h.uid.map_or("-".into(), |u| u.to_string()),
                opts(h.reuseaddr, h.reuseport, h.v6only),
                tail
            )?;
        }
    }
    writeln!(
        out,
        "OPTS: R SO_REUSEADDR, r SO_REUSEPORT, 6 IPV6_V6ONLY, ? unknown"
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "new {} socket {} ({}, uid {}):",
        r.proto,
        fmt_addr(r.laddr, r.lport),
        opts(Some(r.reuseaddr), Some(r.reuseport), Some(r.v6only)),
        r.uid
    )?;
    for (what, d) in [("bind()", &e.bind), ("listen()", &e.listen)] {
        write!(out, "  {what:<9} {}", d.result)?;
        if let Some(alt) = &d.if_unknown_flags_set {
            write!(out, " (or {alt} if the unknown flags are set)")?;
        }
        if let Some(alt) = &d.if_chain_order_differs {
            write!(
                out,
                " (or {alt}, depending on the order of IPv4 and IPv6 sockets in the kernel's hash chain)"
            )?;
        }
        if let Some(alt) = &d.if_udp_walk_differs {
            write!(
                out,
                " (or {alt}: whether a SO_REUSEPORT match ends udp_lib_lport_inuse()'s walk depends on the kernel, and it could not be measured here)"
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "    rule: {}: {}",
            d.rule.function,
            Esc(&d.rule.condition)
        )?;
        for b in &d.blockers {
            let who = match (b.pid, &b.comm) {
                (Some(p), Some(c)) => format!("pid {p} {}", Esc(c)),
                _ => "no owner".into(),
            };
            writeln!(
                out,
                "    blocked by: {} {} -> {} ({who}, cookie {})",
                b.state,
                fmt_addr(b.laddr, b.lport),
                fmt_addr(b.raddr, b.rport),
                b.cookie
            )?;
            if !d.rule.condition.ends_with(&b.why) {
                writeln!(out, "      because: {}", Esc(&b.why))?;
            }
        }
        for a in &d.advice {
            writeln!(out, "    advice: {}", Esc(a))?;
        }
    }
    if let Some(p) = &e.probe {
        writeln!(
            out,
            "  probe: bind() {}{}: {}",
            p.bind,
            p.listen
                .as_ref()
                .map(|l| format!(", listen() {l}"))
                .unwrap_or_default(),
            if p.agrees {
                "agrees with the prediction"
            } else if p.agrees_with_alternative {
                "agrees with the alternative"
            } else {
                "DIFFERS from the prediction"
            }
        )?;
    }
    for n in &e.notes {
        writeln!(out, "note: {}", Esc(n))?;
    }
    Ok(())
}

/// The `--connect` request: the destination checked, the namespace
/// resolved as for a port; options that describe a bind() are refused.
fn connect_request(req: &Request, to: &str) -> Result<connect::Request, ExplainError> {
    let bad = |m: String| Err(ExplainError::Input(m));
    let binding = [
        ("PORT", req.port != 0),
        ("--udp", req.udp),
        ("--addr", req.addr.is_some()),
        ("--reuseaddr", req.reuseaddr),
        ("--reuseport", req.reuseport),
        ("--v6only", req.v6only),
        ("--uid", req.uid.is_some()),
        ("--probe", req.probe),
        ("--cgroup", req.cgroup.is_some()),
        ("--container", req.container.is_some()),
    ];
    if let Some((name, _)) = binding.iter().find(|(_, set)| *set) {
        return bad(format!(
            "--connect explains a TCP connect() from an unbound socket: {name} does not apply to it"
        ));
    }
    let destination = connect::Destination::parse(to).map_err(ExplainError::Input)?;
    // The namespace checks of a port request (one place says them).
    let plan = plan(&Request {
        port: 1,
        netns: req.netns.clone(),
        pid: req.pid,
        ..Request::default()
    })?;
    Ok(connect::Request {
        destination,
        netns: plan.netns,
        json: req.json,
    })
}

/// `inspector explain`: prints the answer as text or one JSON object.
pub fn command(req: &Request) -> Result<(), ExplainError> {
    if let Some(to) = &req.connect {
        return connect::command(&connect_request(req, to)?);
    }
    let mut e = explain(req)?;
    if req.cgroup.is_some() || req.container.is_some() {
        let before = e.holders.len();
        e.holders.retain(|h| {
            req.cgroup
                .as_deref()
                .is_none_or(|c| h.cgroup.as_deref().is_some_and(|p| p.starts_with(c)))
                && req
                    .container
                    .as_deref()
                    .is_none_or(|c| h.container.as_deref().is_some_and(|id| id.starts_with(c)))
        });
        let hidden = before - e.holders.len();
        if hidden > 0 {
            e.notes.push(format!(
                "{hidden} holder(s) outside --cgroup/--container are not listed; the verdict counts them"
            ));
        }
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if req.json {
        serde_json::to_writer(&mut out, &e).map_err(io::Error::other)?;
        writeln!(out)?;
    } else {
        write_text(&e, &mut out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(port: u32) -> Request {
        Request {
            port,
            ..Request::default()
        }
    }

    #[test]
    fn bad_input_is_one_line_naming_the_fix() {
        for (r, needle) in [
            (req(0), "1 to 65535"),
            (req(70000), "1 to 65535"),
            (
                Request {
                    tcp: true,
                    udp: true,
                    ..req(80)
                },
                "--tcp and --udp",
            ),
            (
                Request {
                    netns: Some("/proc/1/ns/net".into()),
                    pid: Some(1),
                    ..req(80)
                },
                "--netns and --pid",
            ),
            (
                Request {
                    pid: Some(4_194_305),
                    ..req(80)
                },
                "no process with pid 4194305",
            ),
            (
                Request {
                    netns: Some("/run/netns/does-not-exist".into()),
                    ..req(80)
                },
                "/run/netns/does-not-exist",
            ),
            (
                Request {
                    v6only: true,
                    addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    ..req(80)
                },
                "--v6only",
            ),
            (
                Request {
                    uid: Some(u32::MAX),
                    probe: true,
                    ..req(80)
                },
                "uid 4294967295",
            ),
        ] {
            let e = plan(&r).expect_err("refused").to_string();
            assert!(e.contains(needle), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn defaults_are_a_tcp_wildcard_of_the_caller() {
        let p = plan(&req(8080)).expect("plan");
        assert_eq!(p.sock.proto, Proto::Tcp);
        assert_eq!(p.sock.addr, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let p = plan(&Request {
            v6only: true,
            udp: true,
            ..req(8080)
        })
        .expect("plan");
        assert_eq!(p.sock.addr, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(p.sock.proto, Proto::Udp);
    }
}
