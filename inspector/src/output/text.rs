//! Human-readable trace lines.

use std::fmt::Write as _;

use crate::{
    model::record::{Record, RecordType, proto_str},
    util::escape,
};

pub const HEADER: &str = "TIME(s)    TYPE      PID     COMM             PROTO OPTS LOCAL                       REMOTE                      DETAIL";

/// bindsnoop-style option letters: R SO_REUSEADDR, r SO_REUSEPORT,
/// 6 IPV6_V6ONLY; '.' when unset.
pub fn opts(r: &Record) -> String {
    let mut s = String::with_capacity(3);
    s.push(if r.reuseaddr { 'R' } else { '.' });
    s.push(if r.reuseport { 'r' } else { '.' });
    s.push(if r.v6only { '6' } else { '.' });
    s
}

pub fn endpoint(addr: std::net::IpAddr, port: u16) -> String {
    match addr {
        std::net::IpAddr::V6(a) => format!("[{a}]:{port}"),
        std::net::IpAddr::V4(a) => format!("{a}:{port}"),
    }
}

/// A value, or `?` where the record has none.
struct Or<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Or<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.pad("?"),
        }
    }
}

/// The `why:` line under a failure: its explanation, escaped (it quotes
/// process names).
pub fn why(r: &Record) -> Option<String> {
    r.explanation
        .as_deref()
        .map(|w| format!("{:11}why: {}", "", escape::text(w)))
}

/// One aligned line; `t0_ns` is the time origin for the first column.
pub fn line(r: &Record, t0_ns: u64) -> String {
    let secs = r.ts_ns.saturating_sub(t0_ns) as f64 / 1e9;
    // Process names are the processes' own choice: escaped for the
    // terminal (crate::util::escape).
    let (pid, comm) = match (r.pid, &r.comm, r.last_pid, &r.last_comm) {
        (Some(p), Some(c), _, _) => (p.to_string(), escape::text(c).into_owned()),
        (None, _, Some(p), Some(c)) => (format!("({p})"), format!("({})", escape::text(c))),
        _ => ("-".to_owned(), "-".to_owned()),
    };
    let remote = if r.rport == 0 && r.raddr.is_unspecified() {
        "-".to_owned()
    } else {
        endpoint(r.raddr, r.rport)
    };
    let mut out = format!(
        "{secs:<10.3} {:<9} {pid:<7} {comm:<16} {:<5} {} {:<27} {:<27} ",
        r.kind.as_str(),
        proto_str(r.proto),
        opts(r),
        endpoint(r.laddr, r.lport),
        remote,
    );
    let _ = match r.kind {
        RecordType::Bind | RecordType::Connect => {
            let req = r
                .req_addr
                .map(|a| endpoint(a, r.req_port.unwrap_or(0)))
                .unwrap_or_default();
            let phase = Or(r.phase);
            match r.errno {
                Some(e) => write!(out, "{phase} {e} (asked {req})"),
                None => write!(out, "{phase} ok (asked {req})"),
            }
        }
        RecordType::Accept => write!(out, "accepted"),
        RecordType::State => write!(out, "{} -> {}", Or(r.old_state), Or(r.new_state)),
        // The substate: TIME_WAIT, or FIN_WAIT2 while the peer's FIN is due.
        RecordType::TwEnter => write!(out, "entered timewait ({}), owner none", Or(r.new_state)),
        RecordType::TwExit => match r.duration_ns {
            Some(d) => write!(out, "{} after {:.3}s", Or(r.reason), d as f64 / 1e9),
            None => write!(out, "{} (entry not seen)", Or(r.reason)),
        },
        RecordType::Reuseport => {
            write!(
                out,
                "delivered to group {}",
                escape::Escaped(r.group.as_deref().unwrap_or("?"))
            )
        }
    };
    out
}

#[cfg(test)]
mod tests {
    use inspector_common::{AF_INET, Event, IPPROTO_TCP, flag, kind};

    use super::*;
    use crate::model::record::decode_bind;

    #[test]
    fn failed_bind_line_reads_well() {
        let mut ev = Event::zeroed();
        ev.kind = kind::BIND;
        ev.phase = inspector_common::phase::BIND;
        ev.family = AF_INET;
        ev.proto = IPPROTO_TCP;
        ev.flags = flag::REUSEADDR;
        ev.req_port = 8080;
        ev.req_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        ev.errno = libc::EADDRINUSE;
        ev.ts_ns = 1_500_000_000;
        let mut r = decode_bind(&ev, RecordType::Bind);
        r.pid = Some(4242);
        r.comm = Some("server".into());
        let l = line(&r, 1_000_000_000);
        assert!(
            l.starts_with("0.500      bind      4242    server           tcp   R.. "),
            "{l}"
        );
        assert!(l.ends_with("bind EADDRINUSE (asked 127.0.0.1:8080)"), "{l}");
    }
}
