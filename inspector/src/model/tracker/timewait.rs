//! The TIME_WAIT side of the tracker: a timewait socket as followed
//! ([`Tw`]), its pending timer detach ([`Cancel`]), the record of its exit,
//! and the recent entries a full socket's CLOSE is folded into
//! ([`RecentTw`]).

use inspector_common::Event;

use super::Tuple;
use crate::{
    kernel::TcpState,
    model::record::{ExitReason, Name, Record, RecordType, addr},
};

/// Timewait entries remembered for [`Tracker::fold_timewait_handover`].
pub const RECENT_TW: usize = 64;

/// Cookies of the timewait sockets that entered last (a timewait socket
/// keeps its connection's cookie, `inet_twsk_alloc()`), in a ring: the full
/// socket's CLOSE follows its `tw_enter` within a few events
/// (`tcp_time_wait()` arms the timer, then `tcp_done()`). The tracker
/// folds live events with it, `trace --replay` recorded records.
#[derive(Debug)]
pub struct RecentTw {
    cookies: [u64; RECENT_TW],
    next: usize,
}

impl Default for RecentTw {
    fn default() -> Self {
        Self {
            cookies: [0; RECENT_TW],
            next: 0,
        }
    }
}

impl RecentTw {
    /// A timewait socket entered with `cookie` (0: none known).
    pub fn note(&mut self, cookie: u64) {
        if cookie != 0 {
            self.cookies[self.next % RECENT_TW] = cookie;
            self.next = self.next.wrapping_add(1);
        }
    }

    /// True, once, for a full socket's change `old -> new` into CLOSE when
    /// a timewait socket entered with its `cookie` lately: that socket's
    /// handover, which the `tw_enter` reported.
    pub fn handover(&mut self, old: TcpState, new: TcpState, cookie: u64) -> bool {
        if new != TcpState::CLOSE || old == TcpState::LISTEN || cookie == 0 {
            return false;
        }
        match self.cookies.iter().position(|&c| c == cookie) {
            Some(i) => {
                self.cookies[i] = 0;
                true
            }
            None => false,
        }
    }

    /// Whether record `r`, as `trace` without `--states` reads records in
    /// order, is left out: the CLOSE of a full socket whose `tw_enter` came
    /// just before.
    pub fn fold(&mut self, r: &Record) -> bool {
        match r.kind {
            RecordType::TwEnter => {
                self.note(r.cookie.unwrap_or(0));
                false
            }
            RecordType::State => match (r.old_state, r.new_state) {
                (Some(old), Some(new)) => self.handover(old, new, r.cookie.unwrap_or(0)),
                _ => false,
            },
            _ => false,
        }
    }
}

/// How long after its last arm a timewait socket is forgotten when no
/// exit event came (lost to a full ring buffer): `TCP_TIMEWAIT_LEN` (60 s,
/// the longest a timewait timer is armed for in `tcp_time_wait()` but for an
/// RTO above it) plus 60 s for timer-wheel slack and such an RTO.
pub const TW_LIFETIME_NS: u64 = 120_000_000_000;

/// "No value" in a [`Tw`] time field. Event times are CLOCK_MONOTONIC
/// nanoseconds (`bpf_ktime_get_ns()`), which reach `u64::MAX` only after
/// 584 years of uptime.
pub(super) const NEVER: u64 = u64::MAX;

/// "No uid" in [`Tw::uid`]: `(uid_t)-1`, `INVALID_UID`, which no task has
/// (`uid_valid()`); events carry it for an unknown owner.
pub(super) const NO_UID: u32 = u32::MAX;

/// A timewait socket as followed: the fields of the event that met it that
/// its records carry, and its last owner. Records are built from it only
/// when one is emitted; up to [`super::MAX_TIME_WAIT`] of these are alive at once,
/// so optional fields use sentinels ([`NEVER`], [`NO_UID`]) rather than
/// `Option`s and the pending detach is packed: 120 bytes an entry.
#[derive(Debug)]
pub(super) struct Tw {
    /// When the timewait socket took over, if tracing saw that ([`NEVER`]
    /// if not).
    pub(super) entered_ns: u64,
    /// Its last timer arm (or the detach, for one met only then): it ages
    /// out [`TW_LIFETIME_NS`] after.
    pub(super) armed_ns: u64,
    /// A detach waiting for its follow-up: its time ([`NEVER`]: none
    /// pending), the rest in `cancel_bits`.
    pub(super) cancel_ns: u64,
    pub(super) cookie: u64,
    pub(super) ino: u64,
    /// cgroup v2 id: the connection's last owner's, else the event's (0:
    /// none).
    pub(super) cgroup: u64,
    /// The connection's last owner; `last_pid` is meaningful only with it.
    pub(super) last_comm: Option<Name>,
    pub(super) laddr: [u8; 16],
    pub(super) raddr: [u8; 16],
    /// [`NO_UID`]: unknown.
    pub(super) uid: u32,
    pub(super) netns: u32,
    pub(super) tid: u32,
    pub(super) bound_dev_if: i32,
    pub(super) last_pid: u32,
    pub(super) lport: u16,
    pub(super) rport: u16,
    pub(super) family: u8,
    pub(super) proto: u8,
    pub(super) flags: u8,
    /// `tw_substate`: TIME_WAIT, or FIN_WAIT2 while the peer's FIN is due.
    pub(super) substate: TcpState,
    /// The pending detach's substate and whether it came inside a
    /// connect() ([`Cancel::pack`]); meaningful only with `cancel_ns`.
    pub(super) cancel_bits: u16,
}

impl Tw {
    pub(super) fn of(ev: &Event, substate: TcpState) -> Self {
        Self {
            entered_ns: NEVER,
            armed_ns: ev.ts_ns,
            cancel_ns: NEVER,
            cookie: ev.cookie,
            ino: ev.ino,
            cgroup: ev.cgroup,
            last_comm: None,
            laddr: ev.laddr,
            raddr: ev.raddr,
            uid: ev.uid,
            netns: ev.netns,
            tid: ev.tid,
            bound_dev_if: ev.bound_dev_if,
            last_pid: 0,
            lport: ev.lport,
            rport: ev.rport,
            family: ev.family,
            proto: ev.proto,
            flags: ev.flags,
            substate,
            cancel_bits: 0,
        }
    }

    /// The pending detach, if any.
    pub(super) fn cancel(&self) -> Option<Cancel> {
        (self.cancel_ns != NEVER).then(|| Cancel::unpack(self.cancel_ns, self.cancel_bits))
    }

    pub(super) fn set_cancel(&mut self, cancel: Option<Cancel>) {
        match cancel {
            Some(c) => (self.cancel_ns, self.cancel_bits) = c.pack(),
            None => (self.cancel_ns, self.cancel_bits) = (NEVER, 0),
        }
    }

    pub(super) fn tuple(&self) -> Tuple {
        Tuple {
            netns: self.netns,
            laddr: addr(self.family, &self.laddr),
            lport: self.lport,
            raddr: addr(self.family, &self.raddr),
            rport: self.rport,
        }
    }

    /// Its record of `kind` at `ts_ns`: what decoding the event that met
    /// it gave, with its last owner.
    pub(super) fn record(&self, sock: u64, kind: RecordType, ts_ns: u64) -> Record {
        let mut ev = Event::zeroed();
        ev.ts_ns = ts_ns;
        ev.sock = sock;
        ev.cookie = self.cookie;
        ev.ino = self.ino;
        ev.cgroup = self.cgroup;
        ev.family = self.family;
        ev.proto = self.proto;
        ev.flags = self.flags;
        ev.tid = self.tid;
        ev.netns = self.netns;
        ev.bound_dev_if = self.bound_dev_if;
        ev.lport = self.lport;
        ev.rport = self.rport;
        ev.laddr = self.laddr;
        ev.raddr = self.raddr;
        let mut r = Record::from_event(&ev, kind);
        r.uid = (self.uid != NO_UID).then_some(self.uid);
        if let Some(comm) = &self.last_comm {
            r.last_pid = Some(self.last_pid);
            r.last_comm = Some(comm.to_string());
        }
        r
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Cancel {
    pub(super) at_ns: u64,
    /// Inside a connect(): the slot is being reused.
    pub(super) in_connect: bool,
    /// The substate when detached: the final one, if no re-arm follows.
    pub(super) substate: TcpState,
}

impl Cancel {
    /// Set in the packed bits: the detach came inside a connect().
    const IN_CONNECT: u16 = 1 << 8;

    /// A detach with no follow-up: inside a connect() the slot went to
    /// the new connection, otherwise the timewait socket was killed.
    pub(super) fn reason(self) -> ExitReason {
        if self.in_connect {
            ExitReason::Reused
        } else {
            ExitReason::Killed
        }
    }

    /// Its time, and its substate (low byte) with [`Cancel::IN_CONNECT`].
    pub(super) fn pack(self) -> (u64, u16) {
        let bits =
            u16::from(self.substate.raw()) | if self.in_connect { Self::IN_CONNECT } else { 0 };
        (self.at_ns, bits)
    }

    pub(super) fn unpack(at_ns: u64, bits: u16) -> Self {
        Self {
            at_ns,
            in_connect: bits & Self::IN_CONNECT != 0,
            substate: TcpState::from(bits.to_le_bytes()[0]),
        }
    }
}

/// The tw_exit record for timewait socket `sock`; `old_state` is its
/// substate when it went.
pub(super) fn exit_record(sock: u64, tw: &Tw, at_ns: u64, reason: ExitReason) -> Record {
    let mut r = tw.record(sock, RecordType::TwExit, at_ns);
    r.old_state = Some(tw.substate);
    r.reason = Some(reason);
    r.duration_ns = (tw.entered_ns != NEVER).then(|| at_ns.saturating_sub(tw.entered_ns));
    r
}
