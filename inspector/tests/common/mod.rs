//! Shared by the privileged tests: loading the real probes (failing in CI,
//! skipping with a reason elsewhere) and collecting their records.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use inspector::{model::filter::Filter, model::record::Record, pipeline::Pipeline};

pub mod serve;
pub mod workers;

/// A directory under the system's temporary one, removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("inspector-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads the real kernel programs. Under `CI=true` any failure fails the
/// test; elsewhere, a missing privilege skips it with a printed reason.
pub fn pipeline(filter: Filter) -> Option<Pipeline> {
    pipeline_with(filter, inspector::kernel::probe::LoadOptions::default())
}

/// [`pipeline`] with load options (`mode` is the tests' own, see
/// [`test_mode`]).
pub fn pipeline_with(
    filter: Filter,
    opts: inspector::kernel::probe::LoadOptions,
) -> Option<Pipeline> {
    let mode = test_mode();
    let opts = inspector::kernel::probe::LoadOptions { mode, ..opts };
    let p = load_privileged("the probes", || Pipeline::with_options(filter, opts))?;
    eprintln!("probes: {} mode (asked: {})", p.probes.mode, mode.name());
    Some(p)
}

/// The socket iterators, under the same rule as [`pipeline`].
pub fn socket_table() -> Option<inspector::kernel::sockets::SocketTable> {
    load_privileged(
        "the socket iterators",
        inspector::kernel::sockets::SocketTable::load,
    )
}

/// Runs `load`: under `CI=true` any failure fails the test; elsewhere a
/// missing privilege or a refusal skips it with a printed reason.
fn load_privileged<T, E: std::fmt::Display>(
    what: &str,
    load: impl FnOnce() -> Result<T, E>,
) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && !ci {
        eprintln!("SKIPPED: needs root to load eBPF programs and create network namespaces");
        return None;
    }
    match load() {
        Ok(t) => Some(t),
        Err(e) if ci => panic!("CI=true and {what} cannot load: {e}"),
        Err(e) => {
            eprintln!("SKIPPED: {what} cannot load here: {e}");
            None
        }
    }
}

/// The mode the privileged tests load the probes in: `INSPECTOR_MODE`
/// (auto, tracepoint, fentry), auto when unset. The VM matrix runs every
/// test binary once per mode.
pub fn test_mode() -> inspector::kernel::probe::Mode {
    match std::env::var("INSPECTOR_MODE") {
        Ok(m) => clap::ValueEnum::from_str(&m, false)
            .unwrap_or_else(|e| panic!("INSPECTOR_MODE={m}: {e} (auto, tracepoint or fentry)")),
        Err(_) => inspector::kernel::probe::Mode::Auto,
    }
}

/// Polls the pipeline until `done` holds over everything collected, or the
/// timeout passes; returns what was collected (only namespace `netns`).
pub fn collect(
    p: &mut Pipeline,
    netns: u32,
    timeout: Duration,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let start = Instant::now();
    let mut all = Vec::new();
    let mut batch = Vec::new();
    loop {
        let last = start.elapsed() >= timeout;
        p.poll(&mut batch, last);
        all.extend(batch.drain(..).filter(|r| r.netns == netns));
        if last || done(&all) {
            return all;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn of_type<'a>(records: &'a [Record], t: &str) -> Vec<&'a Record> {
    records.iter().filter(|r| r.kind.as_str() == t).collect()
}

pub fn tcp() -> socket2::Socket {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("tcp socket")
}

pub fn udp() -> socket2::Socket {
    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).expect("udp socket")
}

pub fn addr(s: &str) -> socket2::SockAddr {
    s.parse::<SocketAddr>().expect("address").into()
}

/// The socket's inode, as the kernel reports it in events (`ino`).
pub fn inode(s: &impl AsRawFd) -> u64 {
    // SAFETY: fstat on a valid descriptor into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the stat buffer we own; the descriptor is
    // open for the call.
    let rc = unsafe { libc::fstat(s.as_raw_fd(), &mut st) };
    assert_eq!(rc, 0, "fstat");
    st.st_ino
}

pub fn errno_of(r: std::io::Result<()>) -> Option<i32> {
    r.err().map(|e| e.raw_os_error().unwrap_or(-1))
}

/// True when this kernel has no `sock:sk_data_ready` tracepoint (Linux
/// 6.1), so SO_REUSEPORT deliveries cannot be observed; the probes must
/// then have said so, and the kernel's BTF must confirm it.
pub fn reuseport_hook_missing(p: &Pipeline) -> bool {
    let reported = p.probes.missing.iter().any(|m| m.contains("sk_data_ready"));
    if p.probes.mode == inspector::kernel::probe::Mode::Fentry {
        assert!(
            !reported,
            "fentry mode sees choices at reuseport_select_sock"
        );
        return false;
    }
    let btf =
        inspector::kernel::btf::Btf::from_file(std::path::Path::new("/sys/kernel/btf/vmlinux"))
            .expect("kernel BTF");
    let exists = btf.has_type("btf_trace_sk_data_ready");
    assert_eq!(
        reported, !exists,
        "the probes report the hook missing exactly when the kernel lacks it"
    );
    if reported {
        eprintln!(
            "SKIPPED: this kernel has no sock:sk_data_ready tracepoint (reported by the probes)"
        );
    }
    reported
}

/// xorshift64*: small, seedable, good enough to pick random set-ups for
/// the differential tests (the seed is printed, so a case can be rerun).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Whether this test can run as root: under `CI=true` a missing privilege
/// fails the test; elsewhere it skips, saying it needs root `to`.
pub fn needs_root(to: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(root || !ci, "CI=true but not root: cannot {to}");
    if !root {
        eprintln!("SKIPPED: needs root to {to}");
    }
    root
}

/// The built binary with these arguments, its standard streams piped.
pub fn inspector(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_inspector"));
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// The differential tests' seed (`INSPECTOR_SEED`, else the clock) and
/// case count (`INSPECTOR_CASES`, else `default_cases`).
pub fn seed_and_cases(default_cases: usize) -> (u64, usize) {
    let seed = std::env::var("INSPECTOR_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let cases = std::env::var("INSPECTOR_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    (seed, cases)
}

/// The TCP state of a socket of this process (`TCP_INFO`'s `tcpi_state`).
pub fn tcp_state(s: &impl AsRawFd) -> u8 {
    // SAFETY: tcp_info is plain integers; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_state
}

/// Closes a connected TCP socket so that the kernel replaces it with a
/// timewait socket in substate FIN_WAIT2 at once: its FIN is sent first
/// (shutdown), and close() comes once the peer's ACK moved it to
/// FIN_WAIT2, where `__tcp_close()` calls `tcp_time_wait()` itself. A
/// plain close() races that ACK: an ACK handled from the socket's backlog
/// after close() has orphaned it leaves a full FIN_WAIT2 socket on a
/// keepalive timer instead (the "bad case" of `tcp_rcv_state_process()`),
/// which a loaded machine hits now and then.
pub fn close_into_fin_wait2(s: socket2::Socket) {
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let start = Instant::now();
    while tcp_state(&s) != inspector::kernel::TcpState::FIN_WAIT2.raw() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the peer never acknowledged our FIN (state {})",
            tcp_state(&s)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(s);
}

/// Every event the kernel side lost since `p` loaded (ring full, failed
/// reads, runs the kernel skipped): the total, and the pipeline's stats
/// line naming each non-zero kind, for a test to account for a shortfall
/// or to print.
pub fn kernel_losses(p: &Pipeline) -> (u64, String) {
    let stats = p.stats(0, false);
    let c = &stats.counters;
    (c.dropped + c.read_errors, stats.line())
}

/// How long the binary may take to attach: loading the probes and the
/// socket iterators parses the kernel's BTF, which under the QEMU guests'
/// software emulation takes tens of seconds.
pub const ATTACH_LIMIT: Duration = Duration::from_secs(120);

/// Starts the binary with `args` and waits until its first line on stderr
/// says the probes attached; the child and its stderr lines. `None` (a
/// skip, printed) when they cannot load outside CI; under `CI=true` that
/// fails the test.
pub fn start(args: &[&str]) -> Option<(std::process::Child, std::sync::mpsc::Receiver<String>)> {
    use std::io::BufRead as _;
    let mut child = inspector(args).spawn().expect("spawn inspector");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(ATTACH_LIMIT)
        .expect("inspector printed nothing");
    if !first.contains("attached") {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "CI=true and the probes cannot load: {first}");
        eprintln!("SKIPPED: the probes cannot load here: {first}");
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    Some((child, rx))
}

/// Waits for `child` to exit, killing it (and failing) after `limit`.
pub fn wait_bounded(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("inspector did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM, then its stdout (unless the caller took it) and the rest of
/// its stderr; the stop must be clean and within 20 s.
pub fn stop(
    mut child: std::process::Child,
    rx: &std::sync::mpsc::Receiver<String>,
) -> (String, Vec<String>) {
    use std::io::Read as _;
    // SAFETY: kill on a pid we spawned and have not reaped.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).expect("read stdout");
    }
    let status = wait_bounded(&mut child, Duration::from_secs(20));
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    (stdout, rx.try_iter().collect())
}

/// The calling thread's namespace's `TcpExt` `ListenDrops`: handshakes
/// dropped on its listeners (`tcp_listendrop()`, which also raises the
/// listener's `sk_drops`).
pub fn listen_drops() -> u64 {
    tcp_ext("ListenDrops")
}

/// A `TcpExt` counter of the calling thread's namespace
/// (`/proc/thread-self/net/netstat`).
pub fn tcp_ext(name: &str) -> u64 {
    let netstat =
        std::fs::read_to_string("/proc/thread-self/net/netstat").expect("/proc/net/netstat");
    let rows: Vec<&str> = netstat
        .lines()
        .filter(|l| l.starts_with("TcpExt:"))
        .collect();
    rows[0]
        .split_whitespace()
        .zip(rows[1].split_whitespace())
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {name}"))
}
