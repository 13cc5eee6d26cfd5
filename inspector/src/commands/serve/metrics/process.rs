//! What the agent is and what it costs: `inspector_build_info` and the
//! standard `process_*` metrics (the names and units of the Go and Python
//! clients' process collectors, so that the usual dashboards work).

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::{Labels, label};
use crate::kernel::sys::ProcessStats;

/// The build and the probes as loaded, for `inspector_build_info`.
#[derive(Debug, Clone, Default)]
pub struct BuildInfo {
    pub version: String,
    pub commit: String,
    /// The attach mode in use: fentry or tracepoint.
    pub mode: String,
    /// Why not fentry: `none` (fentry is in use), `requested`
    /// (`--mode tracepoint`) or `fentry_refused` (auto mode fell back).
    pub fallback_reason: String,
    /// `uname -r`.
    pub kernel: String,
    /// Hooks that could not be attached on this kernel.
    pub missing_hooks: usize,
}

pub(super) fn register_build(reg: &mut Registry, b: &BuildInfo) {
    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![
        ("version", label(&b.version)),
        ("commit", label(&b.commit)),
        ("mode", label(&b.mode)),
        ("fallback_reason", label(&b.fallback_reason)),
        ("kernel", label(&b.kernel)),
    ])
    .set(1);
    reg.register(
        "inspector_build_info",
        "1, labelled with the version and commit of the agent, the attach mode in use, why it is not fentry (none, requested, fentry_refused) and the kernel release",
        info,
    );
    let missing = Gauge::<i64>::default();
    missing.set(i64::try_from(b.missing_hooks).unwrap_or(i64::MAX));
    reg.register(
        "inspector_hooks_missing",
        "Kernel hooks that could not be attached (the agent's log names them and what goes unseen)",
        missing,
    );
}

pub(super) fn register_process(reg: &mut Registry, p: &ProcessStats) {
    let cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    cpu.inc_by(p.cpu_seconds);
    reg.register(
        "process_cpu_seconds",
        "Total user and system CPU time spent in seconds",
        cpu,
    );
    let float = |v: f64| {
        let g = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        g.set(v);
        g
    };
    let int = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        g
    };
    reg.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        int(p.resident_bytes),
    );
    reg.register(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes",
        int(p.virtual_bytes),
    );
    reg.register(
        "process_open_fds",
        "Number of open file descriptors",
        int(p.open_fds),
    );
    reg.register(
        "process_max_fds",
        "Maximum number of open file descriptors",
        int(p.max_fds),
    );
    reg.register(
        "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds",
        float(p.start_time_seconds),
    );
}
