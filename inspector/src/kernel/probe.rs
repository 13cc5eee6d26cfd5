//! Loading and attaching the kernel programs, and reading what they emit.

use std::fs;

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, FEntry, FExit, ProgramError, TracePoint},
};
use inspector_common::{
    AcceptCount, AcceptKey, Config, Delivery, Event, Offsets, Outcome, Owner, TwTotals, counter,
    tw_count,
};

use crate::{
    kernel::btf::Btf,
    kernel::offsets::{self, OffsetsError},
};

/// The compiled kernel programs, embedded at build time.
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/inspector"));

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("loading eBPF programs needs root or CAP_BPF and CAP_PERFMON: run with sudo")]
    NoPrivilege,
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error("loading the eBPF object failed")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {name} failed to load or attach to {hook}")]
    Attach {
        name: &'static str,
        hook: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error(
        "this kernel refuses fentry/fexit programs ({hook}: {reason}); \
         use --mode tracepoint (or --mode auto, which falls back by itself)"
    )]
    FentryRefused { hook: String, reason: String },
    #[error("eBPF map {0} is missing or has the wrong type")]
    Map(&'static str),
    #[error("reading counters")]
    Counters(#[source] aya::maps::MapError),
    #[error(
        "this architecture is not supported yet (x86_64 only: syscall registers are read from pt_regs)"
    )]
    Arch,
}

/// Where a program of the object attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hook {
    /// A BTF tracepoint (`tp_btf`).
    Tracepoint(&'static str),
    /// fentry on a kernel function.
    Entry(&'static str),
    /// fexit on a kernel function.
    Exit(&'static str),
    /// A classic tracepoint of the `syscalls` category (tracefs).
    Syscall(&'static str),
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hook::Tracepoint(t) => write!(f, "{t}"),
            Hook::Entry(func) => write!(f, "fentry:{func}"),
            Hook::Exit(func) => write!(f, "fexit:{func}"),
            Hook::Syscall(tp) => write!(f, "syscalls:{tp}"),
        }
    }
}

/// Tracepoint mode: (program name in the object, hook).
const TRACEPOINT_PROGRAMS: &[(&str, Hook)] = &[
    ("sys_enter", Hook::Tracepoint("sys_enter")),
    ("sys_exit", Hook::Tracepoint("sys_exit")),
    (
        "inet_sock_set_state",
        Hook::Tracepoint("inet_sock_set_state"),
    ),
    ("sk_data_ready", Hook::Tracepoint("sk_data_ready")),
    ("timer_start", Hook::Tracepoint("timer_start")),
    ("timer_cancel", Hook::Tracepoint("timer_cancel")),
    ("timer_expire_entry", Hook::Tracepoint("timer_expire_entry")),
];

/// Tracepoint mode, where tracefs offers them: the per-syscall tracepoints
/// of only the calls decoded, in place of `sys_enter`/`sys_exit`, which
/// run on every system call of the host.
const SYSCALL_PROGRAMS: &[(&str, Hook)] = &[
    ("syscall_enter", Hook::Syscall("sys_enter_bind")),
    ("syscall_enter", Hook::Syscall("sys_enter_listen")),
    ("syscall_enter", Hook::Syscall("sys_enter_connect")),
    ("syscall_enter", Hook::Syscall("sys_enter_accept")),
    ("syscall_enter", Hook::Syscall("sys_enter_accept4")),
    ("syscall_exit", Hook::Syscall("sys_exit_bind")),
    ("syscall_exit", Hook::Syscall("sys_exit_listen")),
    ("syscall_exit", Hook::Syscall("sys_exit_connect")),
    ("syscall_exit", Hook::Syscall("sys_exit_accept")),
    ("syscall_exit", Hook::Syscall("sys_exit_accept4")),
];

/// Where tracefs lists the syscall tracepoints.
const SYSCALL_EVENTS: &str = "/sys/kernel/tracing/events/syscalls";

/// fentry mode: the deciding functions, and the state tracepoint (state
/// changes have no better hook). The first one doubles as the probe of
/// whether this kernel accepts fentry at all.
const FENTRY_PROGRAMS: &[(&str, Hook)] = &[
    ("fentry_inet_bind", Hook::Entry("inet_bind")),
    ("fexit_inet_bind", Hook::Exit("inet_bind")),
    ("fentry_inet6_bind", Hook::Entry("inet6_bind")),
    ("fexit_inet6_bind", Hook::Exit("inet6_bind")),
    ("fexit_inet_csk_get_port", Hook::Exit("inet_csk_get_port")),
    ("fexit_udp_lib_get_port", Hook::Exit("udp_lib_get_port")),
    (
        "fentry_inet_stream_connect",
        Hook::Entry("inet_stream_connect"),
    ),
    (
        "fexit_inet_stream_connect",
        Hook::Exit("inet_stream_connect"),
    ),
    (
        "fentry_inet_dgram_connect",
        Hook::Entry("inet_dgram_connect"),
    ),
    ("fexit_inet_dgram_connect", Hook::Exit("inet_dgram_connect")),
    ("fexit_inet_accept", Hook::Exit("inet_accept")),
    (
        "inet_sock_set_state",
        Hook::Tracepoint("inet_sock_set_state"),
    ),
    (
        "fexit_reuseport_select_sock",
        Hook::Exit("reuseport_select_sock"),
    ),
    (
        "fexit_inet_twsk_schedule",
        Hook::Exit("__inet_twsk_schedule"),
    ),
    ("fentry_tw_timer_handler", Hook::Entry("tw_timer_handler")),
    // The early end of a timewait socket: see inspector-ebpf's
    // fentry_timewait for why this one stays a tracepoint.
    ("timer_cancel", Hook::Tracepoint("timer_cancel")),
];

/// How the programs attach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// fentry/fexit where the kernel accepts them, else tracepoints.
    #[default]
    Auto,
    /// Tracepoints only (syscall boundary, timers, sk_data_ready).
    Tracepoint,
    /// fentry/fexit on the deciding kernel functions.
    Fentry,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Tracepoint => "tracepoint",
            Mode::Fentry => "fentry",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// Options that shape what the kernel side emits.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Only this network namespace inode (filtered in the kernel).
    pub netns: Option<u32>,
    pub mode: Mode,
    /// Size of the event ring buffer in bytes (a power of two, at least a
    /// page); `None` keeps the object's 4 MiB. Tests shrink it to make it
    /// overflow.
    pub ring_bytes: Option<u32>,
    /// Count in kernel maps what metrics only aggregate (successful calls,
    /// accepts, state changes of non-listeners, SO_REUSEPORT deliveries)
    /// instead of emitting each one ([`Config::COUNTED`]); read them with
    /// [`Probes::outcomes`] and [`Probes::deliveries`]. Failed calls and
    /// listener transitions are still emitted.
    pub aggregate: bool,
    /// Tracepoint mode: attach `raw_syscalls:sys_enter`/`sys_exit` even
    /// where the per-syscall tracepoints are there (the fallback for
    /// kernels without them; tests load it so it keeps working).
    pub raw_syscalls: bool,
    /// Emit only the TCP state changes into LISTEN, SYN_RECV and CLOSE
    /// ([`Config::LIFECYCLE`]): `trace --connections`.
    pub lifecycle_states: bool,
    /// Emit no state change but a listener's own ([`Config::DECISIONS`]):
    /// `trace` without `--connections` or `--states`.
    pub decisions_only: bool,
}

/// Kernel counters since load, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events committed to the ring buffer.
    pub emitted: u64,
    /// Events lost because the ring buffer was full.
    pub dropped: u64,
    /// Kernel-side errors of every kind: the sum of [`Counters::errors`].
    pub read_errors: u64,
    /// Every slot of `inspector_common::counter`, by index (emitted and
    /// dropped included).
    pub by_kind: [u64; counter::LEN as usize],
}

impl Counters {
    /// Builds the totals from every slot's count.
    pub fn from_slots(by_kind: [u64; counter::LEN as usize]) -> Self {
        let at = |slot: u32| by_kind[slot as usize];
        Self {
            emitted: at(counter::EMITTED),
            dropped: at(counter::DROPPED),
            read_errors: counter::ERRORS.map(at).sum(),
            by_kind,
        }
    }

    /// The kernel-side error kinds with their counts, in slot order (zero
    /// counts included).
    pub fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        counter::ERRORS.map(|slot| (counter::name(slot), self.by_kind[slot as usize]))
    }
}

/// The loaded and attached programs. Dropping it detaches everything.
pub struct Probes {
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    /// Kernel-side diagnostics (aya-log), forwarded to the `log` crate.
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    counters: PerCpuArray<MapData, u64>,
    /// The active mode: tracepoint or fentry.
    pub mode: Mode,
    /// The hooks attached, in order (`fentry:`/`fexit:` prefixes for
    /// functions).
    pub attached: Vec<String>,
    /// Hooks that could not be attached on this kernel, with the reason;
    /// in auto mode also why fentry was not used.
    pub missing: Vec<String>,
    /// Loaded with [`LoadOptions::aggregate`].
    pub aggregate: bool,
    /// Ring-buffer entries that could not be decoded
    /// ([`counter::MALFORMED`]).
    malformed: u64,
}

impl Probes {
    /// Whether a hook reports which SO_REUSEPORT member got each
    /// connection or datagram (`sock:sk_data_ready` is missing on 6.1).
    pub fn sees_reuseport_deliveries(&self) -> bool {
        self.attached
            .iter()
            .any(|h| h == "sk_data_ready" || h == "fexit:reuseport_select_sock")
    }

    pub fn load(opts: LoadOptions) -> Result<Self, ProbeError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(ProbeError::Arch);
        }
        if !has_bpf_privilege() {
            return Err(ProbeError::NoPrivilege);
        }
        let (kernel, mut offsets) = offsets::running_kernel()?;
        offsets.filter_netns = opts.netns.unwrap_or(0);
        let mut missing = Vec::new();
        // Tracepoint mode tells timewait timers from others by callback.
        offsets.tw_timer_handler = kallsyms("tw_timer_handler").unwrap_or(0);

        let btf = aya::Btf::from_sys_fs().map_err(|e| ProbeError::Load(Box::new(e.into())))?;
        let load = || {
            let mut loader = EbpfLoader::new();
            loader.override_global("OFFSETS", &offsets, true);
            let config = if opts.aggregate {
                Config::COUNTED
            } else if opts.decisions_only {
                Config::DECISIONS
            } else if opts.lifecycle_states {
                Config::LIFECYCLE
            } else {
                Config::ALL
            };
            loader.override_global("CONFIG", &config, true);
            if let Some(bytes) = opts.ring_bytes {
                loader.map_max_entries("EVENTS", bytes);
            }
            loader
                .load(EBPF_OBJECT)
                .map_err(|e| ProbeError::Load(Box::new(e)))
        };
        let mut ebpf = load()?;
        let mut attached = Vec::new();
        let mode = match opts.mode {
            Mode::Tracepoint => Mode::Tracepoint,
            Mode::Fentry => {
                attach_fentry(&mut ebpf, &btf, &offsets, &mut attached, &mut missing)?;
                Mode::Fentry
            }
            Mode::Auto => {
                match attach_fentry(&mut ebpf, &btf, &offsets, &mut attached, &mut missing) {
                    Ok(()) => Mode::Fentry,
                    Err(ProbeError::FentryRefused { hook, reason }) => {
                        missing.push(format!(
                            "fentry/fexit refused by this kernel ({hook}: {reason}); \
                         using tracepoints"
                        ));
                        // Start over from a fresh object: nothing of the
                        // refused mode stays loaded.
                        drop(ebpf);
                        ebpf = load()?;
                        attached.clear();
                        Mode::Tracepoint
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if mode == Mode::Tracepoint {
            if offsets.tw_timer_handler == 0 {
                missing.push(
                    "TIME_WAIT events: tw_timer_handler not found in /proc/kallsyms \
                     (kernel.kptr_restrict hides addresses?)"
                        .to_owned(),
                );
            }
            attach_tracepoints(
                &mut ebpf,
                &btf,
                &kernel,
                &offsets,
                &mut attached,
                &mut missing,
                opts.raw_syscalls,
            )?;
        }
        // Without log statements in the object there is no log map: fine.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(ProbeError::Map("EVENTS"))?)
            .map_err(|_| ProbeError::Map("EVENTS"))?;
        let counters = PerCpuArray::try_from(
            ebpf.take_map("COUNTERS")
                .ok_or(ProbeError::Map("COUNTERS"))?,
        )
        .map_err(|_| ProbeError::Map("COUNTERS"))?;
        Ok(Self {
            _ebpf: ebpf,
            ring,
            logger,
            counters,
            mode,
            attached,
            missing,
            aggregate: opts.aggregate,
            malformed: 0,
        })
    }

    /// Calls counted in the kernel by (kind, proto, phase, errno), with
    /// [`LoadOptions::aggregate`]; empty otherwise.
    pub fn outcomes(&self) -> Vec<(Outcome, u64)> {
        let Some(map) = self._ebpf.map("OUTCOMES") else {
            return Vec::new();
        };
        let Ok(map) = aya::maps::HashMap::<_, Outcome, u64>::try_from(map) else {
            return Vec::new();
        };
        map.iter().filter_map(Result::ok).collect()
    }

    /// SO_REUSEPORT deliveries counted in the kernel, by member socket
    /// address, with [`LoadOptions::aggregate`]; empty otherwise.
    pub fn deliveries(&self) -> Vec<(u64, Delivery)> {
        let Some(map) = self._ebpf.map("DELIVERIES") else {
            return Vec::new();
        };
        let Ok(map) = aya::maps::HashMap::<_, u64, Delivery>::try_from(map) else {
            return Vec::new();
        };
        map.iter().filter_map(Result::ok).collect()
    }

    /// Forgets the delivery count of a member that left its group, so a
    /// later socket at the same address starts from zero.
    pub fn forget_deliveries(&mut self, sock: u64) {
        if let Some(map) = self._ebpf.map_mut("DELIVERIES")
            && let Ok(mut map) = aya::maps::HashMap::<_, u64, Delivery>::try_from(map)
        {
            let _ = map.remove(&sock);
        }
    }

    /// Accepts counted in the kernel by (listening socket, accepting
    /// process), with [`LoadOptions::aggregate`]; empty otherwise.
    pub fn accepts(&self) -> Vec<(AcceptKey, AcceptCount)> {
        let Some(map) = self._ebpf.map("ACCEPTS") else {
            return Vec::new();
        };
        let Ok(map) = aya::maps::HashMap::<_, AcceptKey, AcceptCount>::try_from(map) else {
            return Vec::new();
        };
        map.iter().filter_map(Result::ok).collect()
    }

    /// TIME_WAIT entries and exits counted in the kernel (summed over
    /// CPUs), with [`LoadOptions::aggregate`]; `None` otherwise.
    pub fn timewait_counts(&self) -> Option<TwTotals> {
        if !self.aggregate {
            return None;
        }
        let map = self._ebpf.map("TW_COUNTS")?;
        let map = PerCpuArray::<_, u64>::try_from(map).ok()?;
        let mut slots = [0u64; tw_count::LEN as usize];
        for (i, total) in (0..tw_count::LEN).zip(slots.iter_mut()) {
            *total = map.get(&i, 0).ok()?.iter().sum();
        }
        Some(TwTotals::from_slots(&slots))
    }

    /// Forgets accept counts: a process gone, or a listener that left its
    /// group (a later one at the same address starts from zero).
    pub fn forget_accepts(&mut self, keys: &[AcceptKey]) {
        if let Some(map) = self._ebpf.map_mut("ACCEPTS")
            && let Ok(mut map) = aya::maps::HashMap::<_, AcceptKey, AcceptCount>::try_from(map)
        {
            for k in keys {
                let _ = map.remove(k);
            }
        }
    }

    /// The owner the kernel remembers for socket `sock` (from its bind,
    /// listen, connect or accept).
    pub fn owner(&self, sock: u64) -> Option<Owner> {
        let map = self._ebpf.map("OWNERS")?;
        let map = aya::maps::HashMap::<_, u64, Owner>::try_from(map).ok()?;
        map.get(&sock, 0).ok()
    }

    /// The ring buffer, for readiness polling.
    pub fn ring(&mut self) -> &mut RingBuf<MapData> {
        &mut self.ring
    }

    /// Reads every event available now; returns how many were read.
    pub fn drain(&mut self, mut sink: impl FnMut(&Event)) -> usize {
        if let Some(logger) = &mut self.logger {
            logger.flush();
        }
        let (n, malformed) = drain_ring(&mut self.ring, &mut sink);
        self.malformed += malformed;
        n
    }

    /// Each attached program's total run time in nanoseconds
    /// (`bpf_prog_info.run_time_ns`), which the kernel accumulates only while
    /// `kernel.bpf_stats_enabled` is 1; empty when it is off.
    pub fn run_times(&self) -> Vec<(String, u64)> {
        if !bpf_stats_enabled() {
            return Vec::new();
        }
        self._ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let info = prog.info().ok()?;
                Some((name.to_owned(), info.run_time().as_nanos() as u64))
            })
            .collect()
    }

    /// Every kernel counter, each summed over CPUs; [`counter::SKIPPED`]
    /// from the programs' own accounting.
    pub fn counters(&self) -> Result<Counters, ProbeError> {
        let mut by_kind = [0; counter::LEN as usize];
        for (slot, total) in (0..counter::LEN).zip(by_kind.iter_mut()) {
            let values = self.counters.get(&slot, 0).map_err(ProbeError::Counters)?;
            *total = values.iter().sum();
        }
        by_kind[counter::SKIPPED as usize] = self
            ._ebpf
            .programs()
            .filter_map(|(_, prog)| prog.fd().ok())
            .map(|fd| recursion_misses(std::os::fd::AsFd::as_fd(fd)))
            .sum();
        by_kind[counter::MALFORMED as usize] = self.malformed;
        Ok(Counters::from_slots(by_kind))
    }
}

/// Loads and attaches one program of the object.
fn attach(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    name: &'static str,
    hook: Hook,
) -> Result<(), ProgramError> {
    let prog = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    match hook {
        Hook::Tracepoint(tp) => {
            let prog: &mut BtfTracePoint = prog.try_into()?;
            prog.load(tp, btf)?;
            prog.attach()?;
        }
        Hook::Entry(func) => {
            let prog: &mut FEntry = prog.try_into()?;
            prog.load(func, btf)?;
            prog.attach()?;
        }
        Hook::Exit(func) => {
            let prog: &mut FExit = prog.try_into()?;
            prog.load(func, btf)?;
            prog.attach()?;
        }
        Hook::Syscall(tp) => {
            // One program serves several syscalls: load it once.
            let prog: &mut TracePoint = prog.try_into()?;
            if prog.fd().is_err() {
                prog.load()?;
            }
            prog.attach("syscalls", tp)?;
        }
    }
    Ok(())
}

/// Whether tracefs lists the syscall tracepoints, mounting tracefs first
/// if it is not (a fresh machine; `cargo xtask setup` mounts it too).
fn syscall_tracepoints() -> Result<(), String> {
    if fs::metadata(SYSCALL_EVENTS).is_ok() {
        return Ok(());
    }
    let tracing = std::path::Path::new("/sys/kernel/tracing");
    if tracing.join("events").exists() {
        // tracefs is there but has no syscall events: a kernel built
        // without CONFIG_FTRACE_SYSCALLS.
        return Err("this kernel has no syscalls:* tracepoints (CONFIG_FTRACE_SYSCALLS)".into());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
        .stderr(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && fs::metadata(SYSCALL_EVENTS).is_ok() => Ok(()),
        Ok(s) if s.success() => {
            Err("this kernel has no syscalls:* tracepoints (CONFIG_FTRACE_SYSCALLS)".into())
        }
        _ => Err("tracefs is not mounted at /sys/kernel/tracing and mounting it failed".into()),
    }
}

/// Attaches the per-syscall tracepoints; on any failure detaches what was
/// attached (so no call is seen twice) and says why.
fn attach_syscalls(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    attached: &mut Vec<String>,
) -> Result<(), String> {
    syscall_tracepoints()?;
    let mut done = Vec::new();
    for &(name, hook) in SYSCALL_PROGRAMS {
        if let Err(e) = attach(ebpf, btf, name, hook) {
            for prog in ["syscall_enter", "syscall_exit"] {
                if let Some(p) = ebpf.program_mut(prog)
                    && let Ok(p) = <&mut TracePoint>::try_from(p)
                {
                    let _ = p.unload();
                }
            }
            return Err(format!("{hook}: {}", root_cause(&e)));
        }
        done.push(hook.to_string());
    }
    attached.extend(done);
    Ok(())
}

/// The fentry-mode set. A refusal of the first function program (locked
/// down kernels answer EPERM, kernels without BPF trampolines ENOTSUPP)
/// is [`ProbeError::FentryRefused`]; any later failure is a real error.
fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    offsets: &Offsets,
    attached: &mut Vec<String>,
    missing: &mut Vec<String>,
) -> Result<(), ProbeError> {
    for (i, &(name, hook)) in FENTRY_PROGRAMS.iter().enumerate() {
        if hook == Hook::Tracepoint("timer_cancel") && offsets.tw_timer_handler == 0 {
            missing.push(
                "early TIME_WAIT exits (reuse, RST, namespace teardown): tw_timer_handler \
                 not found in /proc/kallsyms (kernel.kptr_restrict hides addresses?)"
                    .to_owned(),
            );
            continue;
        }
        match attach(ebpf, btf, name, hook) {
            Ok(()) => attached.push(hook.to_string()),
            Err(e) if i == 0 => {
                return Err(ProbeError::FentryRefused {
                    hook: hook.to_string(),
                    reason: root_cause(&e),
                });
            }
            Err(source) => {
                return Err(ProbeError::Attach {
                    name,
                    hook: hook.to_string(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(())
}

fn attach_tracepoints(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    kernel: &Btf,
    offsets: &Offsets,
    attached: &mut Vec<String>,
    missing: &mut Vec<String>,
    raw_syscalls: bool,
) -> Result<(), ProbeError> {
    let per_syscall = !raw_syscalls
        && match attach_syscalls(ebpf, btf, attached) {
            Ok(()) => true,
            Err(reason) => {
                missing.push(format!(
                    "per-syscall tracepoints ({reason}); using raw_syscalls sys_enter/sys_exit, \
                     which run on every system call"
                ));
                false
            }
        };
    for &(name, hook) in TRACEPOINT_PROGRAMS {
        let Hook::Tracepoint(tracepoint) = hook else {
            continue;
        };
        if per_syscall && (tracepoint == "sys_enter" || tracepoint == "sys_exit") {
            continue;
        }
        if tracepoint.starts_with("timer_") && offsets.tw_timer_handler == 0 {
            continue;
        }
        // `sock:sk_data_ready` is younger than the other hooks (Linux 6.1
        // lacks it): without it everything but SO_REUSEPORT deliveries
        // still works, so say so instead of failing.
        if tracepoint == "sk_data_ready" && !kernel.has_type(&format!("btf_trace_{tracepoint}")) {
            missing.push(format!(
                "SO_REUSEPORT deliveries: this kernel has no sock:{tracepoint} tracepoint \
                 (added after Linux 6.1; --mode fentry sees them); bind, state and \
                 TIME_WAIT events are unaffected"
            ));
            continue;
        }
        attach(ebpf, btf, name, hook).map_err(|source| ProbeError::Attach {
            name,
            hook: hook.to_string(),
            source: Box::new(source),
        })?;
        attached.push(hook.to_string());
    }
    Ok(())
}

/// The innermost message of an error chain (the kernel's answer).
pub(crate) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Drains `ring`, decoding each entry as an [`Event`].
pub fn drain_ring(ring: &mut RingBuf<MapData>, sink: &mut impl FnMut(&Event)) -> (usize, u64) {
    let (mut n, mut malformed) = (0, 0);
    while let Some(item) = ring.next() {
        match decode(&item) {
            Some(ev) => {
                sink(&ev);
                n += 1;
            }
            None => malformed += 1,
        }
    }
    (n, malformed)
}

/// Decodes one ring-buffer entry; `None` if it is too short or of a kind
/// this build does not know (counted by the caller, never dropped in
/// silence).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    inspector_common::EventKind::from_raw(bytes[std::mem::offset_of!(Event, kind)])?;
    // SAFETY: the length was checked, `Event` is plain old data for which
    // every bit pattern is valid, and read_unaligned needs no alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// CAP_BPF (39) + CAP_PERFMON (38), or CAP_SYS_ADMIN (21), in the
/// effective set.
pub(crate) fn has_bpf_privilege() -> bool {
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return true; // cannot tell: let the load itself report
    };
    let Some(eff) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    else {
        return true;
    };
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    has(21) || (has(39) && has(38))
}

/// Whether the kernel counts BPF program run time (`kernel.bpf_stats_enabled`).
pub fn bpf_stats_enabled() -> bool {
    fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "1")
}

/// The address of a kernel symbol, if /proc/kallsyms shows it.
pub fn kallsyms(symbol: &str) -> Option<u64> {
    let text = fs::read_to_string("/proc/kallsyms").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let addr = parts.next()?;
        let _kind = parts.next()?;
        let name = parts.next()?;
        if name != symbol {
            return None;
        }
        let addr = u64::from_str_radix(addr, 16).ok()?;
        (addr != 0).then_some(addr)
    })
}

/// How many runs of program `fd` the kernel skipped because another
/// program or a map syscall was active on the CPU
/// (`bpf_prog_info.recursion_misses`, Linux 5.12+; 0 where unknown).
fn recursion_misses(fd: std::os::fd::BorrowedFd<'_>) -> u64 {
    // SAFETY: a plain C struct of integers: all-zero is valid.
    let mut info: aya_obj::generated::bpf_prog_info = unsafe { std::mem::zeroed() };
    match crate::kernel::sys::bpf_prog_info(fd, &mut info) {
        Ok(()) => info.recursion_misses,
        Err(_) => 0,
    }
}
