//! What a build is and what it needs, for `inspector --version` and for
//! whoever packages it.

use std::sync::LazyLock;

/// The commit this binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("INSPECTOR_GIT_COMMIT");

/// SHA-256 of the embedded kernel object: two binaries load the same
/// kernel programs exactly when these agree.
pub const EBPF_SHA256: &str = env!("INSPECTOR_EBPF_SHA256");

/// The capabilities `inspector serve` uses, and what each one is for. The
/// systemd unit and the DaemonSet in `packaging/` grant exactly these (a
/// test compares them); found by running the agent with each one removed.
/// Neither CAP_NET_ADMIN nor CAP_SYS_RESOURCE is among them: no program
/// type used needs the former, and BPF memory is charged to the memory
/// cgroup, not to RLIMIT_MEMLOCK, on every kernel the programs load on
/// (5.11+; they need 5.12).
pub const CAPABILITIES: &[(&str, &str)] = &[
    ("CAP_BPF", "create the maps and load the programs (bpf(2))"),
    (
        "CAP_PERFMON",
        "load tracing programs (tp_btf, fentry/fexit, the socket iterators), \
         attach tracepoints (perf_event_open) and read kernel memory from them",
    ),
    (
        "CAP_SYSLOG",
        "read tw_timer_handler's address in /proc/kallsyms, which recognises \
         TIME_WAIT timers; without it TIME_WAIT is not reported",
    ),
    (
        "CAP_SYS_PTRACE",
        "open /proc/PID/task/TID/ns/net of the thread whose bind failed, to \
         explain the failure in its network namespace",
    ),
    (
        "CAP_SYS_ADMIN",
        "setns() into that namespace, where the socket iterators list the \
         port's holders; without it (or CAP_SYS_PTRACE) failures are counted \
         but not explained",
    ),
];

/// `inspector --version`: version, commit, kernel programs and the
/// capabilities to grant.
pub fn long_version() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let caps: Vec<&str> = CAPABILITIES.iter().map(|(name, _)| *name).collect();
        format!(
            "{}\ncommit {GIT_COMMIT}\nkernel programs sha256:{EBPF_SHA256}\ncapabilities {}",
            env!("CARGO_PKG_VERSION"),
            caps.join(" ")
        )
    });
    &TEXT
}
