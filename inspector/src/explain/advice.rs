//! The human advice `explain` prints under a verdict (`advice:` lines):
//! what would change a refusal, and what a success implies. The kernel's
//! rules themselves live in [`super::rules`]; advice only asks them
//! what-if questions.

use super::{
    fmt_addr,
    rules::{Port, Proto, Sock, SockState, Verdict, inet_rcv_saddr_equal},
};

impl Port {
    /// What would change a refusal, and what a success implies.
    pub(super) fn advise(&self, sk: &Sock, bind: &mut Verdict, listen: &mut Verdict) {
        let failing = if !bind.is_ok() {
            Some(&*bind)
        } else if !listen.is_ok() && sk.proto == Proto::Tcp {
            Some(&*listen)
        } else {
            None
        };
        let mut advice = Vec::new();
        if let Some(v) = failing {
            for &i in &v.blockers {
                let Some(h) = self.socks.get(i) else { continue };
                advice.extend(blocker_advice(sk, h));
                if h.state == SockState::TimeWait && h.reuseaddr.is_none() {
                    advice.extend(self.inherited_hint(h));
                }
            }
            if v.result == "EADDRINUSE" {
                advice.extend(self.what_if(sk));
            }
            if v.result == "EACCES" {
                advice.push(format!(
                    "bind as root, grant CAP_NET_BIND_SERVICE, or use a port >= {}",
                    self.unprivileged_port_start
                ));
            }
        } else if sk.proto == Proto::Tcp {
            advice.extend(self.later_listens(sk));
        } else if sk.reuse()
            && self
                .socks
                .iter()
                .any(|h| h.reuse() && inet_rcv_saddr_equal(sk, h, false))
        {
            advice.push(
                "SO_REUSEADDR on both UDP sockets: unicast datagrams go to the most recently bound one only, not to both"
                    .into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        advice.retain(|a| seen.insert(a.clone()));
        if !bind.is_ok() {
            bind.advice = advice;
        } else {
            listen.advice = advice;
        }
    }

    /// A listener whose address covers a timewait socket of unknown flags:
    /// if the connection was one it accepted, the timewait socket has the
    /// listener's flags (`inet_csk_clone_lock()` copies the socket,
    /// `tcp_time_wait()` copies `sk_reuse` to `tw_reuse`).
    fn inherited_hint(&self, tw: &Sock) -> Option<String> {
        let l = self.socks.iter().find(|l| {
            l.state == SockState::Listen
                && l.proto == Proto::Tcp
                && l.reuseaddr.is_some()
                && (l.addr == tw.addr || inet_rcv_saddr_equal(tw, l, true))
        })?;
        Some(format!(
            "the listener {} has SO_REUSEADDR={} SO_REUSEPORT={}: TIME_WAIT sockets of connections it accepted have the same",
            fmt_addr(l.addr, l.port),
            u8::from(l.reuse()),
            u8::from(l.rport())
        ))
    }

    /// The smallest change of the new socket's own options that makes both
    /// calls succeed.
    fn what_if(&self, sk: &Sock) -> Vec<String> {
        let mut tries: Vec<(&str, Sock)> = Vec::new();
        let mut t = sk.clone();
        if !sk.reuse() {
            t.reuseaddr = Some(true);
            tries.push(("SO_REUSEADDR", t.clone()));
        }
        let mut t = sk.clone();
        if !sk.rport() {
            t.reuseport = Some(true);
            tries.push(("SO_REUSEPORT", t.clone()));
            if !sk.reuse() {
                t.reuseaddr = Some(true);
                tries.push(("SO_REUSEADDR and SO_REUSEPORT", t));
            }
        }
        if sk.is_v6() && sk.is_wildcard() && !sk.v6only {
            let mut t = sk.clone();
            t.v6only = true;
            tries.push(("IPV6_V6ONLY=1", t));
        }
        for (what, t) in tries {
            let (b, l) = self.clone().predict_known(&t);
            let listen_ok = l.is_ok() || t.proto == Proto::Udp;
            if b.is_ok() && listen_ok {
                return vec![format!(
                    "with {what} on the new socket, bind() {} succeed",
                    if t.proto == Proto::Tcp {
                        "and listen() would"
                    } else {
                        "would"
                    }
                )];
            }
            if b.is_ok() && t.proto == Proto::Tcp {
                return vec![format!(
                    "with {what} on the new socket bind() would succeed, but listen() would still fail ({})",
                    l.result
                )];
            }
        }
        Vec::new()
    }

    /// Bound, not listening sockets whose own listen() fails once the new
    /// socket listens.
    fn later_listens(&self, sk: &Sock) -> Vec<String> {
        let mut after = self.clone();
        let (b, Some(idx)) = after.bind(sk) else {
            return Vec::new();
        };
        if !b.is_ok() || !after.listen(idx).is_ok() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, h) in after.socks.iter().enumerate() {
            if i == idx || h.state != SockState::Bound || h.proto != Proto::Tcp {
                continue;
            }
            let mut probe = after.clone();
            if !probe.listen(i).is_ok() {
                out.push(format!(
                    "{} is bound but not listening: its own listen() will fail with EADDRINUSE once this socket listens",
                    fmt_addr(h.addr, h.port)
                ));
            }
        }
        out
    }
}

/// Advice about one blocking socket.
fn blocker_advice(sk: &Sock, h: &Sock) -> Vec<String> {
    let at = fmt_addr(h.addr, h.port);
    let expiry = h.expires_ms.map_or_else(
        || "until it expires".to_owned(),
        |ms| format!("until it expires in {:.0} s", f64::from(ms) / 1000.0),
    );
    let mut out = Vec::new();
    match h.state {
        SockState::TimeWait if h.proto == Proto::Tcp => match h.reuseaddr {
            Some(false) if h.reuseport != Some(true) => out.push(format!(
                "the TIME_WAIT socket {at} was created without SO_REUSEADDR (tw_reuse=0): setting it on the new socket does not help {expiry}; set SO_REUSEADDR on the listener so future restarts can bind"
            )),
            Some(true) if !sk.reuse() => out.push(format!(
                "the TIME_WAIT socket {at} has SO_REUSEADDR: set SO_REUSEADDR on the new socket"
            )),
            None => out.push(format!(
                "sock_diag does not report a TIME_WAIT socket's SO_REUSEADDR: if the closed socket {at} had it (accepted sockets inherit the listener's), SO_REUSEADDR on the new socket is enough; otherwise the port stays blocked {expiry}"
            )),
            _ => {}
        },
        SockState::Listen => {
            if h.reuseport == Some(true) && h.uid != sk.uid {
                out.push(format!(
                    "{at} listens with SO_REUSEPORT as uid {}: a SO_REUSEPORT group needs the same uid (yours is {})",
                    h.uid, sk.uid
                ));
            } else {
                out.push(format!(
                    "{at} is listening: SO_REUSEADDR never lets two TCP sockets listen on one address and port; stop it, pick another address or port, or set SO_REUSEPORT on both (same uid)"
                ));
            }
        }
        _ => {
            if h.reuseaddr == Some(false) && h.proto == Proto::Tcp {
                out.push(format!(
                    "{at} has no SO_REUSEADDR: sharing needs it on both sockets (and the holder not listening)"
                ));
            }
        }
    }
    if h.is_v6() && h.is_wildcard() && !h.v6only && !sk.is_v6() {
        out.push(format!(
            "{at} is dual-stack (IPV6_V6ONLY=0) and claims IPv4 too; with IPV6_V6ONLY=1 it would not"
        ));
    }
    out
}
