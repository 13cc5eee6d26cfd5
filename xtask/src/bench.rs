//! `cargo xtask bench`: the benchmark suite, and a report (Markdown and
//! JSON) under `target/bench/`.
//!
//! - criterion: user-space capacity (decode + tracker, + dashboard model)
//!   and dashboard frame time;
//! - `examples/overhead`: workload throughput untraced / traced by
//!   `inspector trace --json` / watched by `inspector serve` / traced by
//!   bpftrace (counting), alternated in one run, with the machine's busy CPU
//!   per connection and the tax on an unrelated system call; and memory.
//!
//! `--smoke` runs everything briefly (CI checks the report is produced and
//! well-formed); `--long` adds the 5-minute memory run.

use std::{fmt::Write as _, fs};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{cargo, root, setup, step};

/// Mean time in ns of a criterion benchmark, from its estimates file.
fn criterion_mean(group: &str, bench: &str) -> Option<f64> {
    let dir = root()
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let v: Value = serde_json::from_str(&fs::read_to_string(dir).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

#[derive(clap::Args)]
pub struct Options {
    /// Run everything briefly: checks the report is produced and well-formed.
    #[arg(long)]
    pub smoke: bool,
    /// Add the 5-minute memory run.
    #[arg(long)]
    pub long: bool,
    /// Also run another build's `inspector trace --json` (say, the release
    /// binary of the commit before a change) in the same rounds, reported
    /// next to this build's.
    #[arg(long, value_name = "INSPECTOR")]
    pub baseline: Option<std::path::PathBuf>,
}

pub fn bench(
    Options {
        smoke,
        long,
        baseline,
    }: Options,
) -> Result<()> {
    setup::setup()?;
    let out = root().join("target/bench");
    fs::create_dir_all(&out).context("creating target/bench")?;
    step(
        "build",
        cargo(["build", "--release", "-p", "inspector", "--examples"]),
    )?;
    // Frame benchmarks are named by their socket count: start clean.
    let _ = fs::remove_dir_all(root().join("target/criterion/dashboard frame 160x48"));
    let mut criterion = cargo(["bench", "-p", "inspector", "--bench", "pipeline", "--"]);
    if smoke {
        criterion.args(["--warm-up-time", "0.2", "--measurement-time", "0.5"]);
    }
    step("criterion", criterion)?;
    let mut overhead = std::process::Command::new(root().join("target/release/examples/overhead"));
    overhead
        .arg("--inspector")
        .arg(root().join("target/release/inspector"))
        .arg("--out")
        .arg(&out);
    if smoke {
        overhead.arg("--smoke");
    }
    if long {
        overhead.arg("--long");
    }
    if let Some(b) = &baseline {
        overhead.arg("--baseline").arg(b);
    }
    overhead.stdout(std::process::Stdio::null());
    step("overhead", overhead)?;
    let o: Value = serde_json::from_str(&fs::read_to_string(out.join("overhead.json"))?)
        .context("reading target/bench/overhead.json")?;
    let n = 100_000.0;
    let eps = |bench: &str| criterion_mean("pipeline", bench).map(|ns| n / (ns / 1e9));
    let frames: Vec<(String, f64)> =
        fs::read_dir(root().join("target/criterion/dashboard frame 160x48"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let ns = criterion_mean("dashboard frame 160x48", &name)?;
                        Some((name, ns / 1e6))
                    })
                    .collect()
            })
            .unwrap_or_default();
    let report = json!({
        "smoke": smoke,
        "machine": { "cores": o["cores"], "kernel": o["kernel"] },
        "pipeline_events_per_s": {
            "decode_track": eps("decode+track"),
            "decode_track_model": eps("decode+track+model"),
        },
        "dashboard_frame_ms": frames.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        "overhead": o,
    });
    fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    check(&report)?;
    println!("bench: report in target/bench/report.md and report.json");
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn markdown(r: &Value) -> String {
    let o = &r["overhead"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Machine: {} cores, kernel {}{}.\n",
        r["machine"]["cores"],
        r["machine"]["kernel"].as_str().unwrap_or("?"),
        if r["smoke"] == true {
            " (smoke run: short, indicative only)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "Workload {}; {} rounds, {} left out as mixed-phase{}. Figures: median of same-round values [min-max].\n",
        if o["pinned"] == true {
            "on CPU 0, tracers on CPU 1"
        } else {
            "and tracers unpinned (one CPU)"
        },
        o["rounds"],
        o["rounds_discarded_mixed_phase"],
        if o["all_rounds_mixed_phase"] == true {
            " (every round was mixed: all kept)"
        } else {
            ""
        }
    );
    const COLS: [&str; 6] = [
        "inspector",
        "inspector_connections",
        "inspector_states",
        "serve",
        "bpftrace",
        "bpftrace_print",
    ];
    let _ = writeln!(
        s,
        "| measure | untraced | trace --json | trace --json --connections | trace --json --states | serve | bpftrace counting | bpftrace printing | target |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    let spread = |v: &Value, digits: usize| -> String {
        format!(
            "{:.d$} [{:.d$}-{:.d$}]",
            f(&v["median"]),
            f(&v["min"]),
            f(&v["max"]),
            d = digits
        )
    };
    let row = |s: &mut String, what: &str, base: String, key: &str, digits: usize, target: &str| {
        let cells: Vec<String> = COLS.iter().map(|c| spread(&o[key][c], digits)).collect();
        let _ = writeln!(s, "| {what} | {base} | {} | {target} |", cells.join(" | "));
    };
    row(
        &mut s,
        "TCP connections/s, ratio vs untraced",
        format!("{:.0}/s", f(&o["tcp_conn_per_s"]["untraced"]["median"])),
        "tcp_ratio",
        3,
        "trace >= 0.90, serve >= 0.95",
    );
    row(
        &mut s,
        "CPU per TCP connection (workload + tracer), ratio vs untraced",
        format!(
            "{:.1} us",
            f(&o["cpu_us_per_connection"]["untraced"]["median"])
        ),
        "cpu_ratio",
        3,
        "trace <= 1.25; serve within bpftrace counting's range",
    );
    row(
        &mut s,
        "of which the workload's own (us; the kernel programs run in it)",
        format!(
            "{:.1} us",
            f(&o["workload_us_per_connection"]["untraced"]["median"])
        ),
        "workload_us_per_connection",
        1,
        "-",
    );
    row(
        &mut s,
        "of which the tracer process's (us)",
        "-".into(),
        "tracer_us_per_connection",
        1,
        "serve <= 0.3",
    );
    if o["program_us_per_connection"].is_object() {
        row(
            &mut s,
            &format!(
                "the tracer's eBPF programs: run time per connection (us; `bpf_stats`, {} runs per mode after the rounds)",
                o["program_time_runs_per_mode"]
            ),
            "-".into(),
            "program_us_per_connection",
            2,
            "serve <= 1.2x bpftrace counting",
        );
        row(
            &mut s,
            "the tracer's eBPF programs: runs per connection",
            "-".into(),
            "program_runs_per_connection",
            1,
            "-",
        );
    } else {
        let _ = writeln!(
            s,
            "| the tracer's eBPF programs: run time per connection | not measured: {} | | | | | | | - |",
            o["program_time_error"]
        );
    }
    row(
        &mut s,
        "syscall tax: ns added per non-socket syscall (1-byte write to /dev/null)",
        format!("{:.1} ns", f(&o["syscall_tax_ns"]["untraced"]["median"])),
        "syscall_tax_added_ns",
        1,
        "<= bpftrace counting + 5 ns",
    );
    row(
        &mut s,
        "UDP datagrams/s, ratio vs untraced",
        format!(
            "{:.0}/s",
            f(&o["udp_datagrams_per_s"]["untraced"]["median"])
        ),
        "udp_ratio",
        3,
        ">= 0.95",
    );
    let counted = |mode: &str, key: &str| -> String {
        let v: Vec<String> = o["counts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["mode"] == mode)
            .map(|c| c["counted"][key].to_string())
            .collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(
        s,
        "| TIME_WAIT entries on the workload port, per round (tw_enter records; the server closes first, so one per connection) | - | {} | {} | {} | - | - | - | equal to the connections |",
        counted("inspector", "tw_enter_on_port"),
        counted("inspector_connections", "tw_enter_on_port"),
        counted("inspector_states", "tw_enter_on_port"),
    );
    let _ = writeln!(
        s,
        "| TCP state changes into LISTEN/SYN_RECV/CLOSE on the workload port, per round (trace --connections: state records plus tw_enter, which stands for its socket's CLOSE) | - | - | {} | - | - | {} | {} | equal |",
        counted("inspector_connections", "state_changes_on_port"),
        counted("bpftrace", "lifecycle_changes_on_port"),
        counted("bpftrace_print", "state_changes_on_port"),
    );
    let _ = writeln!(
        s,
        "| every TCP state change on the workload port, per round | - | - | - | {} | - | {} | - | equal |",
        counted("inspector_states", "state_changes_on_port"),
        counted("bpftrace", "state_changes_on_port"),
    );
    let _ = writeln!(
        s,
        "| events dropped by the inspector, per round | - | {} | {} | {} | {} | - | - | 0 |",
        counted("inspector", "dropped"),
        counted("inspector_connections", "dropped"),
        counted("inspector_states", "dropped"),
        counted("serve", "dropped"),
    );
    let _ = writeln!(
        s,
        "| tracer process CPU per round (ms) | - | {} | {} | {} | {} | {} | {} | - |",
        counted("inspector", "tracer_cpu_ms"),
        counted("inspector_connections", "tracer_cpu_ms"),
        counted("inspector_states", "tracer_cpu_ms"),
        counted("serve", "tracer_cpu_ms"),
        counted("bpftrace", "tracer_cpu_ms"),
        counted("bpftrace_print", "tracer_cpu_ms"),
    );
    let p = &r["pipeline_events_per_s"];
    let _ = writeln!(
        s,
        "| decode + tracker, one core | - | {:.2} M events/s | - | - | - | - | - | >= 2 M/s |",
        f(&p["decode_track"]) / 1e6
    );
    let _ = writeln!(
        s,
        "| decode + tracker + dashboard model, one core | - | {:.2} M events/s | - | - | - | - | - | >= 2 M/s |",
        f(&p["decode_track_model"]) / 1e6
    );
    if let Some(frames) = r["dashboard_frame_ms"].as_object() {
        for (k, v) in frames {
            let _ = writeln!(
                s,
                "| dashboard frame 160x48, {k} | - | {:.2} ms | - | - | - | - | - | < 2 ms |",
                f(v)
            );
        }
    }
    let m = &o["memory"];
    let _ = writeln!(
        s,
        "| inspector RSS after {} events | - | {} KiB (start {} KiB) | - | - | - | - | - | < 64 MiB |",
        m["events_target"], m["rss_kib_after_events"], m["rss_kib_start"]
    );
    if let Some(samples) = m["long_run"].as_array().filter(|a| !a.is_empty()) {
        let line: Vec<String> = samples
            .iter()
            .map(|x| format!("{}s: {} KiB", x["t_s"], x["rss_kib"]))
            .collect();
        let _ = writeln!(
            s,
            "| RSS over a 5-minute run at full rate | - | {} | - | - | - | - | - | flat, < 64 MiB |",
            line.join(", ")
        );
    }
    if o["cpu_ratio"].get("baseline").is_some() {
        let _ = writeln!(
            s,
            "\nThe same rounds, this build's `trace --json` against the baseline build's:\n\n\
             | measure | trace --json, this build | trace --json, baseline build |\n|---|---|---|"
        );
        for (what, key, digits) in [
            ("TCP connections/s, ratio vs untraced", "tcp_ratio", 3),
            ("CPU per TCP connection, ratio vs untraced", "cpu_ratio", 3),
            (
                "of which the workload's own (us)",
                "workload_us_per_connection",
                1,
            ),
            (
                "of which the tracer process's (us)",
                "tracer_us_per_connection",
                1,
            ),
            ("syscall tax, ns added", "syscall_tax_added_ns", 1),
            (
                "eBPF programs' run time per connection (us)",
                "program_us_per_connection",
                2,
            ),
            ("UDP datagrams/s, ratio vs untraced", "udp_ratio", 3),
        ] {
            let _ = writeln!(
                s,
                "| {what} | {} | {} |",
                spread(&o[key]["inspector"], digits),
                spread(&o[key]["baseline"], digits)
            );
        }
        let _ = writeln!(
            s,
            "| tracer process CPU per round (ms) | {} | {} |",
            counted("inspector", "tracer_cpu_ms"),
            counted("baseline", "tracer_cpu_ms")
        );
    }
    s
}

/// The report is well-formed: every figure present and plausible.
fn check(r: &Value) -> Result<()> {
    let o = &r["overhead"];
    for (what, v) in [
        (
            "untraced TCP rate",
            &o["tcp_conn_per_s"]["untraced"]["median"],
        ),
        (
            "traced TCP rate",
            &o["tcp_conn_per_s"]["inspector"]["median"],
        ),
        ("serve TCP rate", &o["tcp_conn_per_s"]["serve"]["median"]),
        (
            "bpftrace TCP rate",
            &o["tcp_conn_per_s"]["bpftrace"]["median"],
        ),
        (
            "bpftrace printing TCP rate",
            &o["tcp_conn_per_s"]["bpftrace_print"]["median"],
        ),
        (
            "untraced CPU per connection",
            &o["cpu_us_per_connection"]["untraced"]["median"],
        ),
        (
            "traced CPU per connection",
            &o["cpu_us_per_connection"]["inspector"]["median"],
        ),
        (
            "untraced syscall tax",
            &o["syscall_tax_ns"]["untraced"]["median"],
        ),
        (
            "traced syscall tax",
            &o["syscall_tax_ns"]["inspector"]["median"],
        ),
        (
            "untraced UDP rate",
            &o["udp_datagrams_per_s"]["untraced"]["median"],
        ),
        (
            "traced UDP rate",
            &o["udp_datagrams_per_s"]["inspector"]["median"],
        ),
        (
            "trace's eBPF program time per connection",
            &o["program_us_per_connection"]["inspector"]["median"],
        ),
        ("pipeline rate", &r["pipeline_events_per_s"]["decode_track"]),
        ("RSS", &o["memory"]["rss_kib_after_events"]),
    ] {
        if f(v).is_nan() || f(v) <= 0.0 {
            bail!("benchmark report: {what} is missing or zero: {v}");
        }
    }
    let read = o["memory"]["summary"].as_str().unwrap_or("");
    if !read.contains("events read") {
        bail!("benchmark report: the memory run's inspector did not report its events: {read:?}");
    }
    if r["dashboard_frame_ms"]
        .as_object()
        .is_none_or(|m| m.len() != 4)
    {
        bail!("benchmark report: expected 4 dashboard frame figures");
    }
    Ok(())
}
