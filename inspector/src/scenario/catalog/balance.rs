//! Why a SO_REUSEPORT group's workers are uneven, each cause of
//! `inspector balance` shown by the kernel: a worker that stops accepting
//! (its queue fills, then the kernel drops), a BPF program that chooses
//! the member, few flows, and connections that stay open. Each is judged
//! from the kernel's own tables (`/proc/net/tcp` of the namespace, its
//! `TcpExt` counters) and its delivery events.

use std::time::Duration;

use serde_json::json;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{Res, io, reuseport::ALPHA};
use crate::{
    scenario::{
        Outcome, ScenarioError, Verdict,
        ctx::{Ctx, accept_n, inode, settle, sockaddr},
    },
    util::stats::Spread,
};

/// A `TcpExt` counter of the current thread's namespace
/// (`/proc/thread-self/net/netstat`).
fn tcp_ext(name: &str) -> Result<u64, ScenarioError> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat")?;
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    let [names, values] = rows.as_slice() else {
        return Err(ScenarioError::Setup(
            "no TcpExt in /proc/net/netstat".into(),
        ));
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| ScenarioError::Setup(format!("no TcpExt {name}")))
}

/// The accept queue of the listener with inode `ino` as the kernel shows it
/// (`rx_queue` of `/proc/thread-self/net/tcp`, `sk_ack_backlog` for a
/// listener in `get_tcp4_sock()`).
fn queued_on(ino: u64) -> Result<u64, ScenarioError> {
    let text = std::fs::read_to_string("/proc/thread-self/net/tcp")?;
    let ino = ino.to_string();
    text.lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(3) == Some(&"0A") && f.get(9) == Some(&ino.as_str()))
                .then(|| u64::from_str_radix(f.get(4)?.split(':').nth(1)?, 16).ok())
                .flatten()
        })
        .ok_or_else(|| ScenarioError::Setup("the listener is not in /proc/net/tcp".into()))
}

pub(super) fn stuck_worker(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    const PORT: &str = "127.0.0.1:8023";
    const BACKLOG: i32 = 4;
    const CLIENTS: usize = 40;
    // The stuck worker stopped accepting (a pause, a lock, a slow
    // request); its partner accepts everything, with room to spare.
    let stuck = ctx.tcp("stuck worker (never accepts)")?;
    let working = ctx.tcp("working worker")?;
    for (s, backlog) in [(&stuck, BACKLOG), (&working, 128)] {
        ctx.reuseport(s)?;
        ctx.bind(s, PORT)?;
        ctx.listen(s, backlog);
    }
    let drops_before = tcp_ext("ListenDrops")?;
    let to: SockAddr = sockaddr(PORT)?.into();
    let mut clients = Vec::new();
    let mut accepted = Vec::new();
    for _ in 0..CLIENTS {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.set_nonblocking(true))?;
        // EINPROGRESS; a SYN the kernel drops stays unanswered.
        let _ = c.connect(&to);
        clients.push(c);
        accepted.extend(accept_n(&working, CLIENTS, Duration::ZERO));
    }
    settle();
    accepted.extend(accept_n(&working, CLIENTS, Duration::from_millis(100)));
    // Before the first SYN retransmission (1 s): each drop is one client.
    let queued = queued_on(stuck.ino)?;
    let dropped = tcp_ext("ListenDrops")?.saturating_sub(drops_before);
    // A client whose SYN was dropped is still connecting (SYN_SENT):
    // neither refused nor connected.
    let waiting = clients
        .iter()
        .filter(|c| c.peer_addr().is_err() && matches!(c.take_error(), Ok(None)))
        .count();
    let limit = u64::try_from(BACKLOG).unwrap_or(0);
    ctx.delivered(&working, accepted.len() as u64, true);
    // Fentry mode counts the choice for each SYN, dropped ones included;
    // the queue is what the kernel kept.
    ctx.delivered(&stuck, queued, false);
    let full = queued == limit + 1;
    let parts = [full, dropped > 0, waiting > 0];
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&parts),
        summary: format!(
            "{CLIENTS} connections to 2 SO_REUSEPORT workers, one never accepting (backlog \
             {BACKLOG}): the working one accepted {}; {queued} wait in the stuck one's queue \
             (full at {} = backlog + 1), {dropped} handshakes dropped (ListenDrops), {waiting} \
             clients still connecting",
            accepted.len(),
            limit + 1
        ),
        details: json!({
            "clients": CLIENTS,
            "backlog": BACKLOG,
            "accepted_by_working": accepted.len(),
            "queued_on_stuck": queued,
            "listen_drops": dropped,
            "clients_waiting": waiting,
        }),
        explanation: "reuseport_select_sock() picks a member from the 4-tuple hash \
            (reciprocal_scale() over the group) without looking at its accept queue: a worker \
            that stops accepting keeps its share. Each completed handshake waits in its queue \
            (inet_csk_reqsk_queue_add()) until the queue is full (sk_acceptq_is_full(): more \
            than the backlog); then tcp_conn_request() drops each new SYN hashed to it \
            (tcp_listendrop(): ListenDrops and the listener's sk_drops), and the client retries \
            after 1, 3, 7 s while the other worker has room. `inspector balance` names this \
            member_not_accepting; serve's inspector_accept_queue_length and \
            inspector_accept_queue_drops_total show it."
            .into(),
    })
}

/// Three SO_REUSEPORT listeners on `port` in a fresh namespace, `n`
/// connections kept open, then accepted: the count per listener. With
/// `program`, the first listener's group gets a classic BPF program that
/// always chooses the first member.
fn selector_round(
    ctx: &mut Ctx,
    port: u16,
    program: bool,
    n: usize,
) -> Result<Vec<u64>, ScenarioError> {
    ctx.fresh_netns()?;
    let addr = format!("127.0.0.1:{port}");
    let tag = if program { "with program" } else { "hash" };
    let mut listeners = Vec::new();
    for i in 0..3 {
        let s = ctx.tcp(&format!("l{i} ({tag})"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, &addr)?;
        ctx.listen(&s, 128);
        listeners.push(s);
    }
    if program {
        use std::os::fd::AsFd as _;
        io(crate::kernel::sys::attach_reuseport_first_member(
            listeners[0].sock.as_fd(),
        ))?;
        ctx.note("SO_ATTACH_REUSEPORT_CBPF on l0's group: ret #0 (always the first member)");
    }
    let to: SockAddr = sockaddr(&addr)?.into();
    let mut clients = Vec::new();
    for _ in 0..n {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.connect(&to))?;
        clients.push(c);
    }
    settle();
    let counts: Vec<u64> = listeners
        .iter()
        .map(|l| accept_n(l, n, Duration::from_millis(100)).len() as u64)
        .collect();
    for (l, &c) in listeners.iter().zip(&counts) {
        ctx.delivered(l, c, true);
    }
    drop(clients);
    Ok(counts)
}

pub(super) fn bpf_selector(ctx: &mut Ctx) -> Res {
    const N: usize = 60;
    let hashed = selector_round(ctx, 8024, false, N)?;
    let chosen = selector_round(ctx, 8024, true, N)?;
    let spread = Spread::exact(&hashed);
    let all_first = chosen.first() == Some(&(N as u64)) && chosen.iter().sum::<u64>() == N as u64;
    // Under the hash, all 60 on one member has probability 3 * 3^-60.
    let hash_spreads = hashed.iter().filter(|&&c| c > 0).count() > 1;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[all_first, hash_spreads]),
        summary: format!(
            "{N} connections to 3 SO_REUSEPORT listeners: by the hash {hashed:?} (exact p {:.3}); \
             with a classic BPF program returning 0 on the group {chosen:?}",
            spread.p_value
        ),
        details: json!({
            "connections": N,
            "hash": hashed,
            "hash_spread": spread,
            "with_program": chosen,
        }),
        explanation: "reuseport_select_sock() runs the group's program when one is attached \
            (SO_ATTACH_REUSEPORT_CBPF/EBPF, sk_reuseport_cb->prog) and takes the member it \
            returns (run_bpf_filter(): an index into the group); only without one, or when it \
            returns an index past the group, does reciprocal_scale() over the 4-tuple hash \
            choose. A program that always returns 0 sends everything to the first member: the \
            split is the program's, so no test of the hash applies. `inspector balance` names \
            this bpf_selector (the socket iterator reads the group's prog pointer)."
            .into(),
    })
}

pub(super) fn few_flows(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    const PORT: &str = "127.0.0.1:8025";
    const ROUNDS: usize = 20;
    const FLOWS: usize = 6;
    let mut listeners = Vec::new();
    for i in 0..3 {
        let s = ctx.tcp(&format!("l{i}"))?;
        ctx.reuseport(&s)?;
        ctx.bind(&s, PORT)?;
        ctx.listen(&s, 128);
        listeners.push(s);
    }
    let to: SockAddr = sockaddr(PORT)?.into();
    let mut totals = vec![0u64; listeners.len()];
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        // Six connections kept open: each a flow of its own.
        let mut clients = Vec::new();
        for _ in 0..FLOWS {
            let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
            io(c.connect(&to))?;
            clients.push(c);
        }
        settle();
        let split: Vec<u64> = listeners
            .iter()
            .map(|l| {
                let got = accept_n(l, FLOWS, Duration::from_millis(20));
                // Closed by the server side first: no TIME_WAIT left on
                // the clients' ports for the next round to meet.
                for s in &got {
                    let _ = s.set_linger(Some(Duration::ZERO));
                }
                got.len() as u64
            })
            .collect();
        for (t, n) in totals.iter_mut().zip(&split) {
            *t += n;
        }
        rounds.push(Spread::exact(&split));
        drop(clients);
    }
    for (l, &n) in listeners.iter().zip(&totals) {
        ctx.delivered(l, n, true);
    }
    let uneven = rounds.iter().filter(|s| s.imbalance >= 1.5).count();
    let worst = rounds.iter().map(|s| s.imbalance).fold(0.0, f64::max);
    let min_p = rounds.iter().map(|s| s.p_value).fold(1.0, f64::min);
    let all = Spread::exact(&totals);
    Ok(Outcome {
        reason: None,
        advice: None,
        // Uneven rounds are the rule (P(max/mean >= 1.5) = 0.88 per round
        // for a fair hash: 10 or fewer of 20 has probability ~1e-5), and
        // no split of 6 flows can reach ALPHA (the
        // most uneven, all on one member, has p = 3 * 3^-6 = 0.004).
        verdict: Verdict::of(&[uneven * 2 > ROUNDS, min_p > ALPHA]),
        summary: format!(
            "{ROUNDS} rounds of {FLOWS} connections kept open on 3 SO_REUSEPORT listeners: \
             {uneven} rounds with max/mean >= 1.5 (worst {worst:.2}), smallest exact p {min_p:.3}; \
             all {} together {totals:?} (p {:.3})",
            ROUNDS * FLOWS,
            all.p_value
        ),
        details: json!({
            "rounds": ROUNDS,
            "flows_per_round": FLOWS,
            "splits": rounds,
            "uneven_rounds": uneven,
            "worst_imbalance": worst,
            "smallest_p": min_p,
            "totals": totals,
            "totals_spread": all,
        }),
        explanation: "Each connection is one draw of reciprocal_scale(4-tuple hash, members) \
            in reuseport_select_sock(): 6 flows over 3 members land unevenly most of the time, \
            and the same members even out over many flows. With so few flows no split is \
            evidence of an unfair choice: the exact multinomial test cannot go below 0.004. \
            Long-lived connections make it show: the load is the connections kept, not the \
            rate of new ones, and a few of them are few flows. `inspector balance` names this \
            too_few_flows."
            .into(),
    })
}

/// Connections in ESTABLISHED on local port `port` whose socket inode is in
/// `inodes` (`mine`), or not, as the kernel lists them
/// (`/proc/thread-self/net/tcp`).
fn established_of(port: u16, inodes: &[u64], mine: bool) -> Result<usize, ScenarioError> {
    let text = std::fs::read_to_string("/proc/thread-self/net/tcp")?;
    let port = format!(":{port:04X}");
    Ok(text
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1).is_some_and(|a| a.ends_with(&port))
                && f.get(3) == Some(&"01")
                && f.get(9)
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| inodes.contains(&i) == mine)
        })
        .count())
}

pub(super) fn long_lived(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    const PORT: u16 = 8026;
    const CONNECTIONS: usize = 120;
    let addr = format!("127.0.0.1:{PORT}");
    // One worker keeps every connection it accepts (a long-lived client
    // protocol); the other answers and closes.
    let keeper = ctx.tcp("keeper (keeps its connections)")?;
    let closer = ctx.tcp("closer (closes at once)")?;
    for s in [&keeper, &closer] {
        ctx.reuseport(s)?;
        ctx.bind(s, &addr)?;
        ctx.listen(s, 256);
    }
    let to: SockAddr = sockaddr(&addr)?.into();
    let mut clients = Vec::new();
    let (mut kept, mut closed) = (Vec::new(), 0u64);
    for _ in 0..CONNECTIONS {
        let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
        io(c.connect(&to))?;
        clients.push(c);
        kept.extend(accept_n(&keeper, CONNECTIONS, Duration::ZERO));
        for s in accept_n(&closer, CONNECTIONS, Duration::ZERO) {
            let _ = s.set_linger(Some(Duration::ZERO));
            closed += 1;
        }
    }
    settle();
    kept.extend(accept_n(&keeper, CONNECTIONS, Duration::from_millis(50)));
    for s in accept_n(&closer, CONNECTIONS, Duration::from_millis(50)) {
        let _ = s.set_linger(Some(Duration::ZERO));
        closed += 1;
    }
    let delivered = [kept.len() as u64, closed];
    ctx.delivered(&keeper, delivered[0], true);
    ctx.delivered(&closer, delivered[1], true);
    // What the kernel holds open for each worker now.
    let kept_inodes: Vec<u64> = kept.iter().filter_map(|s| inode(s).ok()).collect();
    let open_keeper = established_of(PORT, &kept_inodes, true)?;
    let open_other = established_of(PORT, &kept_inodes, false)?;
    let spread = Spread::exact(&delivered);
    let even = spread.p_value > ALPHA;
    let piled = open_keeper == kept.len() && open_keeper > 0 && open_other == 0;
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[even, piled]),
        summary: format!(
            "{CONNECTIONS} connections to 2 SO_REUSEPORT workers: delivered {delivered:?} (exact \
             p {:.3}); open now (ESTABLISHED in /proc/net/tcp): keeper {open_keeper}, closer \
             {open_other}",
            spread.p_value
        ),
        details: json!({
            "connections": CONNECTIONS,
            "delivered": delivered,
            "spread": spread,
            "open_keeper": open_keeper,
            "open_closer": open_other,
            "accepted_keeper": kept.len(),
        }),
        explanation: "reuseport_select_sock() hashes each new connection's 4-tuple over the \
            group; it knows nothing of the connections a member already holds. Where clients \
            stay connected, the load is the open connections, and they pile up on the worker \
            that keeps them while the split of new ones stays even. `inspector balance` names \
            this long_lived_load (deliveries even, open connections uneven)."
            .into(),
    })
}

/// How the workers of [`shared_queue`] wait for a connection.
#[derive(Clone, Copy)]
enum Waiting {
    /// Each blocks in `accept()` (`inet_csk_wait_for_connect()`).
    Accept,
    /// All wait in `epoll_wait()` on one epoll instance (level-triggered
    /// EPOLLIN on the listener), then `accept()` without blocking.
    OneEpoll,
}

/// Waits, up to a second, until every thread in `tids` has started and
/// sleeps (state `S` in `/proc/self/task/TID/stat`).
fn all_asleep(tids: &[std::sync::atomic::AtomicI32]) {
    let asleep = |tid: i32| {
        tid > 0
            && std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                .ok()
                .and_then(|s| {
                    // The state follows the command name's closing paren.
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().next().map(|st| st == "S")
                })
                .unwrap_or(false)
    };
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(1)
        && !tids
            .iter()
            .all(|t| asleep(t.load(std::sync::atomic::Ordering::Acquire)))
    {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// One round of [`shared_queue`]: `workers` threads share `listener`, the
/// driver connects `connections` times, one at a time, each once every
/// worker is back waiting; returns what each worker accepted.
fn shared_round(
    listener: &Socket,
    to: &SockAddr,
    workers: usize,
    connections: usize,
    how: Waiting,
) -> Result<Vec<u64>, ScenarioError> {
    use std::{
        os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        },
    };
    // A blocked accept() rechecks `stop` this often. Waiters in epoll_wait()
    // never time out (a timeout would requeue them and change the order
    // measured): an eventfd in the set wakes them all at the end.
    const TICK: Duration = Duration::from_millis(100);
    let last_error = || ScenarioError::Io(std::io::Error::last_os_error());
    let epoll = match how {
        Waiting::Accept => {
            io(listener.set_nonblocking(false))?;
            io(listener.set_read_timeout(Some(TICK)))?;
            None
        }
        Waiting::OneEpoll => {
            io(listener.set_nonblocking(true))?;
            // SAFETY: epoll_create1 and eventfd take flags only; a returned
            // fd is owned here at once.
            let (ep, done) = unsafe {
                let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
                if ep < 0 {
                    return Err(last_error());
                }
                let ep = OwnedFd::from_raw_fd(ep);
                let done = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
                if done < 0 {
                    return Err(last_error());
                }
                (ep, OwnedFd::from_raw_fd(done))
            };
            // The listener edge-triggered (one wakeup per connection), the
            // end level-triggered (it wakes every waiter in turn).
            for (fd, events, tag) in [
                (listener.as_raw_fd(), libc::EPOLLIN | libc::EPOLLET, 0),
                (done.as_raw_fd(), libc::EPOLLIN, 1),
            ] {
                let mut ev = libc::epoll_event {
                    events: events as u32,
                    u64: tag,
                };
                // SAFETY: both fds are open; `ev` outlives the call.
                if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0
                {
                    return Err(last_error());
                }
            }
            Some((ep, done))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<AtomicU64> = (0..workers).map(|_| AtomicU64::new(0)).collect();
    let total = AtomicU64::new(0);
    let tids: Vec<AtomicI32> = (0..workers).map(|_| AtomicI32::new(0)).collect();
    let mut clients = Vec::with_capacity(connections);
    std::thread::scope(|scope| -> Result<(), ScenarioError> {
        for (count, tid) in counts.iter().zip(&tids) {
            let (stop, total, epoll) = (&stop, &total, epoll.as_ref());
            scope.spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid.store(unsafe { libc::gettid() }, Ordering::Release);
                while !stop.load(Ordering::Relaxed) {
                    if let Some((ep, _)) = epoll {
                        let mut ev = libc::epoll_event { events: 0, u64: 0 };
                        // SAFETY: `ev` is one writable event; the fd is open.
                        let n = unsafe { libc::epoll_wait(ep.as_raw_fd(), &mut ev, 1, -1) };
                        if n <= 0 || ev.u64 == 1 {
                            continue;
                        }
                    }
                    // Another worker may have taken it (EAGAIN), or the
                    // blocking accept() timed out: wait again.
                    if listener.accept().is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                        total.fetch_add(1, Ordering::Release);
                    }
                }
            });
        }
        let result = (|| {
            for i in 1..=connections as u64 {
                // Every worker asleep in its wait (the one that took the
                // last connection back in it) before the next connection.
                all_asleep(&tids);
                let c = io(Socket::new(Domain::IPV4, Type::STREAM, None))?;
                io(c.connect(to))?;
                clients.push(c);
                let start = std::time::Instant::now();
                while total.load(Ordering::Acquire) < i && start.elapsed() < Duration::from_secs(2)
                {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Ok(())
        })();
        stop.store(true, Ordering::Relaxed);
        if let Some((_, done)) = &epoll {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an open eventfd.
            if unsafe { libc::write(done.as_raw_fd(), one.as_ptr().cast(), one.len()) } != 8 {
                // The waiters would never wake: leaving the scope would hang.
                std::process::abort();
            }
        }
        result
    })?;
    Ok(counts.iter().map(|c| c.load(Ordering::Relaxed)).collect())
}

pub(super) fn shared_queue(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    const WORKERS: usize = 3;
    const CONNECTIONS: usize = 60;
    const ADDR: &str = "127.0.0.1:8027";
    let listener = ctx.tcp("listener (shared by 3 worker threads)")?;
    ctx.bind(&listener, ADDR)?;
    if let Some(e) = ctx.listen(&listener, 128) {
        return Err(ScenarioError::Setup(format!("listen: {e}")));
    }
    ctx.note("3 worker threads share the one listening socket (no SO_REUSEPORT)");
    let to: SockAddr = sockaddr(ADDR)?.into();
    let blocking = shared_round(&listener.sock, &to, WORKERS, CONNECTIONS, Waiting::Accept)?;
    let epoll = shared_round(&listener.sock, &to, WORKERS, CONNECTIONS, Waiting::OneEpoll)?;
    let accepted = blocking.iter().chain(&epoll).sum::<u64>();
    let fifo = Spread::exact(&blocking);
    let top = epoll.iter().copied().max().unwrap_or(0);
    let top_share = top as f64 / (epoll.iter().sum::<u64>().max(1)) as f64;
    // Turns: every worker took about a third; last in, first out: the one
    // that just served takes nearly every connection.
    let turns = fifo.p_value > ALPHA && fifo.min > 0;
    let lifo = top_share >= 0.8;
    ctx.hold(listener);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[turns, lifo]),
        summary: format!(
            "{CONNECTIONS} connections, one at a time, to one listener shared by {WORKERS} \
             threads: blocked in accept() each took {blocking:?} (exact p {:.3}); waiting in one \
             epoll instance (edge-triggered) {epoll:?} (the busiest {:.0}%)",
            fifo.p_value,
            top_share * 100.0
        ),
        details: json!({
            "workers": WORKERS,
            "connections": CONNECTIONS,
            "accept": blocking,
            "accept_spread": fifo,
            "one_epoll": epoll,
            "one_epoll_top_share": top_share,
            "accepted": accepted,
        }),
        explanation: "One listening socket has one accept queue; which worker gets a \
            connection is decided by the wakeup order, not by a hash. A task blocked in \
            accept() waits in inet_csk_wait_for_connect() with prepare_to_wait_exclusive(), \
            which queues it at the tail of the socket's wait queue, and a new connection wakes \
            the first exclusive waiter: the workers take turns. Tasks in epoll_wait() on one \
            epoll instance queue themselves at its head (ep_poll() uses \
            __add_wait_queue_exclusive()), so the worker that just served, back in its wait \
            last, is woken first and takes the next connection too (with a level-triggered \
            listener, ep_done_scan() wakes a second waiter after reporting, and the two race: \
            uneven still, less so). `inspector balance` names \
            this shared_accept_queue, with the accepts per task; a SO_REUSEPORT socket per \
            worker, or EPOLLEXCLUSIVE on each worker's own epoll instance, spreads the load."
            .into(),
    })
}
