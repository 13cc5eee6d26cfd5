//! Kernel events built by hand, for unit tests, benchmarks and examples: one
//! place that fills in an [`Event`] the way the kernel programs do, so a new
//! test states only what matters to it.
//!
//! ```
//! use inspector::fixture::EventBuilder;
//!
//! // pid 4242 failed to bind 127.0.0.1:8080 with EADDRINUSE.
//! let e = EventBuilder::bind(8080)
//!     .sock(0x1001)
//!     .owner(4242, "server")
//!     .errno(libc::EADDRINUSE)
//!     .build();
//! assert_eq!((e.req_port, e.errno), (8080, libc::EADDRINUSE));
//! ```

use crate::kernel::TcpState;
use inspector_common::{AF_INET, Event, IPPROTO_TCP, IPPROTO_UDP, flag, kind, phase};

/// The initial network namespace's inode number on most systems.
pub const INIT_NETNS: u32 = 4026531840;
/// 127.0.0.1, the address every fixture event uses.
pub const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

/// Builds one [`Event`]: TCP over IPv4 on 127.0.0.1 in [`INIT_NETNS`]
/// unless told otherwise; every field not set stays zero, as in the kernel.
#[derive(Clone, Copy, Debug)]
#[must_use]
pub struct EventBuilder {
    event: Event,
}

impl EventBuilder {
    /// An event of `kind` (an [`inspector_common::kind`] value).
    pub fn new(kind: u8) -> Self {
        let mut event = Event::zeroed();
        event.kind = kind;
        event.family = AF_INET;
        event.proto = IPPROTO_TCP;
        event.netns = INIT_NETNS;
        event.laddr[..4].copy_from_slice(&LOOPBACK);
        Self { event }
    }

    /// A successful `bind()` of 127.0.0.1:`port`, raised inside the syscall.
    pub fn bind(port: u16) -> Self {
        Self::new(kind::BIND)
            .phase(phase::BIND)
            .lport(port)
            .requested(port)
            .flags(flag::SYSCALL)
    }

    /// A `connect()` to 127.0.0.1:`port`, raised inside the syscall; the
    /// ephemeral local port is set with [`lport`](Self::lport).
    pub fn connect(port: u16) -> Self {
        Self::new(kind::CONNECT)
            .phase(phase::CONNECT)
            .rport(port)
            .requested(port)
            .flags(flag::SYSCALL)
    }

    /// A TCP state change (`sock:inet_sock_set_state`).
    pub fn state(old: TcpState, new: TcpState) -> Self {
        let mut b = Self::new(kind::STATE);
        b.event.old_state = old.raw();
        b.event.new_state = new.raw();
        b
    }

    /// A timewait timer event (`kind` is TW_ARM, TW_CANCEL or TW_EXPIRE)
    /// for a timewait socket in `substate`.
    pub fn time_wait(kind: u8, substate: TcpState) -> Self {
        let mut b = Self::new(kind);
        b.event.new_state = substate.raw();
        b
    }

    /// Replaces the kind, keeping every other field.
    pub fn kind(mut self, kind: u8) -> Self {
        self.event.kind = kind;
        self
    }

    /// The socket id (the kernel address of its `struct sock`).
    pub fn sock(mut self, sock: u64) -> Self {
        self.event.sock = sock;
        self
    }

    /// The socket's file inode.
    pub fn ino(mut self, ino: u64) -> Self {
        self.event.ino = ino;
        self
    }

    /// When it happened, in CLOCK_MONOTONIC nanoseconds.
    pub fn at(mut self, ts_ns: u64) -> Self {
        self.event.ts_ns = ts_ns;
        self
    }

    pub fn netns(mut self, inum: u32) -> Self {
        self.event.netns = inum;
        self
    }

    /// A UDP socket instead of TCP.
    pub fn udp(mut self) -> Self {
        self.event.proto = IPPROTO_UDP;
        self
    }

    pub fn phase(mut self, phase: u8) -> Self {
        self.event.phase = phase;
        self
    }

    pub fn lport(mut self, port: u16) -> Self {
        self.event.lport = port;
        self
    }

    /// The remote port; a non-zero one also sets the remote address to
    /// 127.0.0.1, a zero one clears it (no peer).
    pub fn rport(mut self, port: u16) -> Self {
        self.event.rport = port;
        let addr = if port == 0 { [0; 4] } else { LOOPBACK };
        self.event.raddr[..4].copy_from_slice(&addr);
        self
    }

    /// Local and remote port at once (see [`rport`](Self::rport)).
    pub fn ports(self, local: u16, remote: u16) -> Self {
        self.lport(local).rport(remote)
    }

    /// What the caller asked for: 127.0.0.1:`port`.
    pub fn requested(mut self, port: u16) -> Self {
        self.event.req_port = port;
        self.event.req_addr[..4].copy_from_slice(&LOOPBACK);
        self
    }

    /// The positive errno the caller saw (0: success).
    pub fn errno(mut self, errno: i32) -> Self {
        self.event.errno = errno;
        self
    }

    /// Adds [`inspector_common::flag`] bits to those already set.
    pub fn flags(mut self, flags: u8) -> Self {
        self.event.flags |= flags;
        self
    }

    /// The owning process: pid and command name (truncated to the kernel's
    /// 16 bytes).
    pub fn owner(mut self, pid: u32, comm: &str) -> Self {
        self.event.pid = pid;
        let n = comm.len().min(self.event.comm.len());
        self.event.comm = [0; 16];
        self.event.comm[..n].copy_from_slice(&comm.as_bytes()[..n]);
        self
    }

    pub fn tid(mut self, tid: u32) -> Self {
        self.event.tid = tid;
        self
    }

    /// The socket cookie (timewait sockets keep their connection's).
    pub fn cookie(mut self, cookie: u64) -> Self {
        self.event.cookie = cookie;
        self
    }

    /// The kind-specific extra (reuseport group id, timer expiry).
    pub fn aux(mut self, aux: u64) -> Self {
        self.event.aux = aux;
        self
    }

    pub fn build(self) -> Event {
        self.event
    }

    /// The bytes the kernel's ring buffer hands over for this event, what
    /// [`crate::kernel::probe::decode`] reads.
    pub fn bytes(self) -> Vec<u8> {
        // SAFETY: `Event` is `#[repr(C)]` plain old data with explicit
        // padding fields, so all of its `size_of` bytes are initialized and
        // may be read as `u8` for as long as `self.event` lives (this call).
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const self.event).cast::<u8>(), size_of::<Event>())
        };
        bytes.to_vec()
    }
}

/// Starts from an existing event, to change a few of its fields.
impl From<Event> for EventBuilder {
    fn from(event: Event) -> Self {
        Self { event }
    }
}

/// A SO_REUSEPORT listener on 127.0.0.1:`port` as a socket read saw it,
/// its accept queue at `queued` of 128, held by `holder` (pid, name).
pub fn listener(
    ino: u64,
    port: u16,
    queued: u32,
    holder: (u32, &str),
) -> crate::model::balance::Listener {
    crate::model::balance::Listener {
        ino,
        local: std::net::SocketAddr::from((LOOPBACK, port)),
        reuseport: true,
        queued,
        queue_limit: 128,
        drops: 0,
        bpf_selector: false,
        incoming_cpu: false,
        holders: vec![(holder.0, holder.1.to_owned())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::probe::decode;

    #[test]
    fn bytes_decode_back_to_the_event() {
        let b = EventBuilder::connect(8080)
            .sock(7)
            .lport(40000)
            .owner(9, "curl");
        assert_eq!(decode(&b.bytes()), Some(b.build()));
    }

    #[test]
    fn a_long_command_name_is_cut_at_sixteen_bytes() {
        let e = EventBuilder::new(kind::STATE)
            .owner(1, "a-very-long-process-name")
            .build();
        assert_eq!(&e.comm, b"a-very-long-proc");
    }
}
