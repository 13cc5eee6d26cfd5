//! The catalog: each setup the documents discuss, as a function that runs it
//! and judges the document's claim from what the kernel did. This file holds
//! the table; the scenarios live one file per family: `restart` (TIME_WAIT),
//! `reuseaddr` (bind conflicts), `reuseport` (who receives what), `balance`
//! (why a SO_REUSEPORT group's workers are uneven), `client` (source ports)
//! and `throughput`.

mod balance;
mod client;
mod restart;
mod reuseaddr;
mod reuseport;
mod throughput;

use self::{
    balance::{bpf_selector, few_flows, long_lived, shared_queue, stuck_worker},
    client::{
        bind_before_connect, client_fixed_port, ephemeral_exhaustion, exhaustion_per_destination,
        service_port_taken, tw_reuse_modes,
    },
    restart::{restart_plain, restart_reuseaddr, restart_reuseport},
    reuseaddr::{
        different_addresses, dual_stack, reuseaddr_bind_both_then_listen,
        reuseaddr_while_listening, wildcard_plus_specific,
    },
    reuseport::{
        port_hijack, reuseport_other_uid, rolling_restart, tcp_reuseport, udp_multicast,
        udp_reuseaddr_unicast, udp_reuseport,
    },
    throughput::throughput,
};
use crate::kernel::Errno;

// `Call` and `ctx` are named through `super::` by the scenarios that log a
// call or a delivery by hand.
use super::{Call, Outcome, Scenario, ScenarioError, ctx};

type Res = Result<Outcome, ScenarioError>;

const GOLANG: &str = "golang-tcp-port-reuse.md";
const GUIDE: &str = "reuseport-vs-reuseaddr-guide.md";
const EXPLAINED: &str = "so-reuseaddr-explained.md";
const NOTES: &str = "socket-options-notes.md";

pub static CATALOG: &[Scenario] = &[
    Scenario {
        number: 1,
        name: "restart-over-time-wait",
        title: "server restart over its own TIME_WAIT, new socket without SO_REUSEADDR",
        claim: "Can't bind on the same port by the server w/o `SO_REUSEADDR` option if socket in TIME_WAIT state",
        source: Some(GOLANG),
        run: restart_plain,
    },
    Scenario {
        number: 2,
        name: "restart-reuseaddr",
        title: "the same restart with SO_REUSEADDR on the new socket only, then on old and new",
        claim: "allows to bind to a socket even if another socket socket is in `TIME_WAIT` ... `SO_REUSEADDR` simply ignores and existing sockets in `TIME_WAIT`",
        source: Some(NOTES),
        run: restart_reuseaddr,
    },
    Scenario {
        number: 3,
        name: "restart-reuseport",
        title: "the same restart with SO_REUSEPORT only: on the new socket, then on both",
        claim: "| **TIME_WAIT bypass** | ✅ Yes (TCP only) | ✅ Yes (TCP) |",
        source: Some(GUIDE),
        run: restart_reuseport,
    },
    Scenario {
        number: 4,
        name: "reuseaddr-second-bind-while-listening",
        title: "two TCP sockets with SO_REUSEADDR on one address and port, the first listening",
        claim: "SO_REUSEADDR BEHAVIOR ... Multiple Binds ... ❌ No (one process)",
        source: Some(GUIDE),
        run: reuseaddr_while_listening,
    },
    Scenario {
        number: 5,
        name: "reuseaddr-bind-both-then-listen",
        title: "two TCP sockets with SO_REUSEADDR bound to one address and port, then both listen",
        claim: "COMPLETE COMPARISON ... Multiple binds ... ❌ No",
        source: Some(GUIDE),
        run: reuseaddr_bind_both_then_listen,
    },
    Scenario {
        number: 6,
        name: "wildcard-plus-specific",
        title: "0.0.0.0:P plus 127.0.0.1:P with SO_REUSEADDR, the first listening, then only bound",
        claim: "`0.0.0.0:80` and `127.0.0.1:80` -> NOT O.K. (would be okay with `REUSEADDR`)",
        source: Some(NOTES),
        run: wildcard_plus_specific,
    },
    Scenario {
        number: 7,
        name: "different-addresses-or-ports",
        title: "different addresses on one port; one address on different ports; no options",
        claim: "`127.0.0.1:80` and `127.0.0.2:80` -> O.K. ... `127.0.0.1:80` and `127.0.0.1:81` -> O.K.",
        source: Some(NOTES),
        run: different_addresses,
    },
    Scenario {
        number: 8,
        name: "udp-reuseaddr-unicast",
        title: "UDP: three SO_REUSEADDR sockets on one port, unicast from many sources, then the receiver closes",
        claim: "If two sockets are bound to the same interface and port, data will be delivered to both sockets.",
        source: Some(EXPLAINED),
        run: udp_reuseaddr_unicast,
    },
    Scenario {
        number: 9,
        name: "udp-multicast-reuseaddr",
        title: "UDP multicast group on loopback with three SO_REUSEADDR receivers",
        claim: "Scenario: Multiple processes want to receive same multicast stream ... All three processes receive SAME packets! ✅",
        source: Some(GUIDE),
        run: udp_multicast,
    },
    Scenario {
        number: 10,
        name: "udp-reuseport-distribution",
        title: "UDP SO_REUSEPORT group of 3: per-flow distribution and per-source stickiness",
        claim: "✅ Consistent hashing ensures: ... • Same source always goes to same process ... • Even distribution across processes ... • No packet duplication",
        source: Some(GUIDE),
        run: udp_reuseport,
    },
    Scenario {
        number: 11,
        name: "tcp-reuseport-distribution",
        title: "TCP SO_REUSEPORT group of 3: per-listener distribution; fixed versus changing source port",
        claim: "Client 1 reconnects (same IP, different port): ... Route to → Process 1 ✅ (Same!) ... Good for session affinity!",
        source: Some(GUIDE),
        run: tcp_reuseport,
    },
    Scenario {
        number: 12,
        name: "reuseport-other-uid",
        title: "SO_REUSEPORT bind by a process of another uid (65534), TCP and UDP",
        claim: "on Linux all sockets that want to share the same address, port combination need to belong to the same User ID to avoid **port hijacking**",
        source: Some(NOTES),
        run: reuseport_other_uid,
    },
    Scenario {
        number: 13,
        name: "port-hijack",
        title: "attacker (uid 65534) on the wildcard, server (uid 0) on a specific address, both SO_REUSEADDR, TCP and UDP; then a same-address UDP hijack across uids",
        claim: "1. Attacker's malicious process starts ... setsockopt(SO_REUSEADDR) ... bind(0.0.0.0:80)  ← Binds to all IPs ... 2. Legitimate server starts ... setsockopt(SO_REUSEADDR) ... bind(192.168.1.100:80)  ← Specific IP ... 3. Traffic might go to BOTH! ... - Some requests → legitimate server ... - Some requests → attacker's process",
        source: Some(GUIDE),
        run: port_hijack,
    },
    Scenario {
        number: 14,
        name: "ephemeral-exhaustion",
        title: "client connects with a 4-port ip_local_port_range under the namespace's default tcp_tw_reuse: between two hosts (a veth pair), then over loopback",
        claim: "Sometimes your TCP server written in Go fails with error `bind: address already in use` ... 3. Client uses random port for itself and make a lot of reconnects so it exhausted all ephemeral ports ... (left all potential available port in `TIME_WAIT` state)",
        source: Some(GOLANG),
        run: ephemeral_exhaustion,
    },
    Scenario {
        number: 15,
        name: "client-fixed-source-port",
        title: "client binds an explicit source port, closes first and reconnects at once",
        claim: "Sometimes your TCP server written in Go fails with error `bind: address already in use` ... 4. Client uses the same port to itself",
        source: Some(GOLANG),
        run: client_fixed_port,
    },
    Scenario {
        number: 16,
        name: "rolling-restart-reuseport",
        title: "close one of two SO_REUSEPORT listeners with connections in its accept queue, then connect anew: defaults, then tcp_migrate_req=1",
        claim: "Stop Worker 1 ... Workers 2, 3, 4 handle all traffic ... (kernel redistributes automatically) ... Result: Zero downtime deployment!",
        source: Some(GUIDE),
        run: rolling_restart,
    },
    Scenario {
        number: 17,
        name: "dual-stack",
        title: "[::]:P versus 0.0.0.0:P with IPV6_V6ONLY 0 and 1",
        // No document covers dual-stack: the project's own claim.
        claim: "A dual-stack [::]:P (IPV6_V6ONLY=0) also covers 0.0.0.0:P, so the two cannot both be bound; with IPV6_V6ONLY=1 they are independent",
        source: None,
        run: dual_stack,
    },
    Scenario {
        number: 18,
        name: "reuseport-throughput",
        title: "one listener versus 4 SO_REUSEPORT listeners, one versus 4 UDP receivers: delivered in a fixed window, with drops",
        claim: "Single Process vs SO_REUSEPORT (4 cores): ... Single Process: ... 20,000 conn/s ... SO_REUSEPORT (4 workers): ... 75,000 conn/s ... Improvement: 3.75x ... Single thread: ... 500K pps ... 4 processes: ... 2.5M pps ... Improvement: 5x throughput",
        source: Some(GUIDE),
        run: throughput,
    },
    // 19 to 22: the client side of port allocation, which no document
    // covers as such: the project's own claims.
    Scenario {
        number: 19,
        name: "exhaustion-per-destination",
        title: "a 4-port ip_local_port_range used up by open connections to one destination, then connects to another",
        claim: "Ephemeral ports run out per destination: with every port of ip_local_port_range connected to one address and port, connect() to it fails with EADDRNOTAVAIL while connect() to another destination still succeeds, from the same local ports",
        source: None,
        run: exhaustion_per_destination,
    },
    Scenario {
        number: 20,
        name: "tcp-tw-reuse-modes",
        title: "a 4-port range filled with client-side TIME_WAIT between two hosts (a veth pair): tcp_tw_reuse 0, 1 and 2; then 2 over loopback",
        claim: "Once TIME_WAIT fills the ephemeral range, connect() fails with EADDRNOTAVAIL under tcp_tw_reuse=0 and succeeds after about 1 s under tcp_tw_reuse=1; 2, a new namespace's default, reuses only for loopback peers: between two hosts it fails as 0 does",
        source: None,
        run: tw_reuse_modes,
    },
    Scenario {
        number: 21,
        name: "bind-before-connect",
        title: "16 clients over 2 destinations and an 8-port range, each bound to port 0 before connect(): plain, then IP_BIND_ADDRESS_NO_PORT",
        claim: "bind() before connect() reserves a source port for every destination, so the range runs out after as many sockets as ports; with IP_BIND_ADDRESS_NO_PORT the port is chosen at connect() and shared among destinations",
        source: None,
        run: bind_before_connect,
    },
    Scenario {
        number: 22,
        name: "service-port-taken-by-client",
        title: "a client connects out of a 2-port range, then a service binds the port it got; then with the port in ip_local_reserved_ports",
        claim: "A service port inside ip_local_port_range can be taken by an outgoing connection's source port: the service's bind() then fails with EADDRINUSE although nothing listens there; listing the port in ip_local_reserved_ports keeps connect() off it",
        source: None,
        run: service_port_taken,
    },
    // 23 to 27: why a SO_REUSEPORT group's workers are uneven, the
    // project's own claims.
    Scenario {
        number: 23,
        name: "reuseport-stuck-worker",
        title: "two SO_REUSEPORT workers, one never accepting (backlog 4), 40 connections",
        claim: "A SO_REUSEPORT worker that stops accepting keeps its share of new connections: they wait in its accept queue until it is full, then the kernel drops the handshakes hashed to it while the other worker has room",
        source: None,
        run: stuck_worker,
    },
    Scenario {
        number: 24,
        name: "reuseport-bpf-selector",
        title: "60 connections to 3 SO_REUSEPORT listeners: by the hash, then with a classic BPF program returning 0 on the group",
        claim: "A BPF program attached to a SO_REUSEPORT group replaces the 4-tuple hash: one that always returns 0 sends every connection to the first member, where the hash spreads them",
        source: None,
        run: bpf_selector,
    },
    Scenario {
        number: 25,
        name: "reuseport-few-flows",
        title: "20 rounds of 6 connections kept open on 3 SO_REUSEPORT listeners",
        claim: "With few flows a SO_REUSEPORT group's split is uneven by chance: 6 connections over 3 members mostly give one member 1.5 times the mean or more, and no split of so few flows is evidence of an unfair hash",
        source: None,
        run: few_flows,
    },
    Scenario {
        number: 26,
        name: "reuseport-long-lived",
        title: "120 connections to 2 SO_REUSEPORT workers, one keeping every connection, the other closing at once",
        claim: "The SO_REUSEPORT hash spreads new connections evenly whatever the members already hold: where one worker keeps its connections, the open connections pile up on it while the deliveries stay even",
        source: None,
        run: long_lived,
    },
    Scenario {
        number: 27,
        name: "shared-accept-queue",
        title: "60 connections, one at a time, to one listener shared by 3 worker threads: blocked in accept(), then waiting in one epoll instance (edge-triggered)",
        claim: "Workers sharing one listening socket are split by the order the kernel wakes them, not by a hash: threads blocked in accept() take turns, while threads waiting in one epoll instance are woken last in, first out, so the worker that just served takes nearly every connection",
        source: None,
        run: shared_queue,
    },
];

fn io<T>(r: std::io::Result<T>) -> Result<T, ScenarioError> {
    r.map_err(ScenarioError::Io)
}

fn show(errno: &Option<Errno>) -> String {
    errno.map_or_else(|| "ok".to_owned(), |e| e.to_string())
}
