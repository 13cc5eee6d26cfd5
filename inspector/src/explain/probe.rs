//! `--probe`: one real `bind()` (and `listen()`, for TCP) with the
//! requested options in the target namespace, as the requested uid, to
//! check the prediction. The socket is closed at once; nothing else is
//! touched.

use std::{fmt, io};

use serde::{Serialize, Serializer};
use socket2::{Domain, Socket, Type};

use super::{
    bind::Decision,
    request::BindPlan,
    rules::{Outcome, Proto, Sock},
};
use crate::kernel::{
    netns::{self, NetnsError},
    sys::{self, BindSpec},
};

/// What one real call returned, or why it was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probed {
    Done(Outcome),
    Skipped(String),
}

impl fmt::Display for Probed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Done(o) => fmt::Display::fmt(o, f),
            Self::Skipped(why) => write!(f, "skipped: {why}"),
        }
    }
}

/// As the outcome's name, or `skipped: REASON`.
impl Serialize for Probed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What a real bind (and listen) in the namespace returned.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub bind: Probed,
    pub listen: Option<Probed>,
    /// Whether the probe agrees with the prediction.
    pub agrees: bool,
    /// It does not, but the kernel returned the alternative the
    /// prediction stated (unknown flags set, or another hash chain order).
    pub agrees_with_alternative: bool,
}

/// Binds (and listens) once for real and compares with `bind` and
/// `listen`, the predictions.
pub fn run(plan: &BindPlan, bind: &Decision, listen: &Decision) -> ProbeResult {
    let (b, l) = probe_bind(plan);
    let tcp = plan.sock.proto == Proto::Tcp;
    let done = |p: &Probed| match p {
        Probed::Done(o) => Some(*o),
        Probed::Skipped(_) => None,
    };
    let got_bind = done(&b);
    let got_listen = l.as_ref().and_then(done);
    let bind_ok = got_bind == Some(Outcome::Ok);
    let agrees =
        got_bind == Some(bind.result) && (!bind_ok || !tcp || got_listen == Some(listen.result));
    let stated =
        |d: &Decision, got: Option<Outcome>| got.is_some_and(|g| d.possible().any(|o| o == g));
    let agrees_with_alternative =
        !agrees && stated(bind, got_bind) && (!bind_ok || !tcp || stated(listen, got_listen));
    ProbeResult {
        bind: b,
        listen: l,
        agrees,
        agrees_with_alternative,
    }
}

/// Why a probe could not run.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("creating the probe socket")]
    Socket(#[source] io::Error),
    #[error("the probe child could not run")]
    Child(#[source] io::Error),
}

/// The calls, in the plan's namespace: in this process for the caller's
/// own uid, in a forked child that drops to another uid otherwise.
fn probe_bind(plan: &BindPlan) -> (Probed, Option<Probed>) {
    let sock = plan.sock.clone();
    let result = if sock.uid == sys::geteuid() {
        netns::in_netns(plan.netns.as_deref(), move || probe_here(&sock))
    } else {
        netns::in_netns(plan.netns.as_deref(), move || {
            probe_as(&sock).map_err(ProbeError::Child)
        })
    };
    result.unwrap_or_else(|e| (Probed::Skipped(crate::util::errors::chain(&e)), None))
}

fn probe_here(sock: &Sock) -> Result<(Probed, Option<Probed>), ProbeError> {
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
        return Ok((
            Probed::Skipped(format!("setting the options failed: {e}")),
            None,
        ));
    }
    let b = Outcome::of_result(&s.bind(&std::net::SocketAddr::new(sock.addr, sock.port).into()));
    let l = (b.is_ok() && sock.proto == Proto::Tcp)
        .then(|| Probed::Done(Outcome::of_result(&s.listen(1))));
    Ok((Probed::Done(b), l))
}

/// The probe as another uid: a forked child (of this thread, so in its
/// namespace) drops to `sock.uid` (gid too), binds, listens, reports the
/// errnos and exits.
fn probe_as(sock: &Sock) -> io::Result<(Probed, Option<Probed>)> {
    let listen = sock.proto == Proto::Tcp;
    let spec = BindSpec {
        addr: std::net::SocketAddr::new(sock.addr, sock.port),
        stream: listen,
        reuseaddr: sock.reuseaddr == Some(true),
        reuseport: sock.reuseport == Some(true),
        v6only: sock.is_v6().then_some(sock.v6only),
        listen: listen.then_some(1),
        count_on_release: false,
        connect: None,
        comm: None,
    };
    let report = sys::fork_as(sock.uid, &spec, false)?.report;
    if report.setup != 0 {
        return Ok((
            Probed::Skipped("could not become that uid or create the socket".to_owned()),
            None,
        ));
    }
    let name = |e: Option<i32>| match e {
        Some(e) => Probed::Done(Outcome::of_errno(e)),
        None => Probed::Skipped("the child did not report it".to_owned()),
    };
    let bind_ok = report.bind == Some(0);
    Ok((
        name(report.bind),
        (bind_ok && listen).then(|| name(report.listen)),
    ))
}
