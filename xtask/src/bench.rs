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
}

pub fn bench(Options { smoke, long }: Options) -> Result<()> {
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
        "| measure | untraced | trace --json | serve | bpftrace | target |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| TCP connections/s, ratio vs untraced (us/conn added) | {:.0}/s | {:.3} ({:.1}) | {:.3} ({:.1}) | {:.3} ({:.1}) | >= 0.95, not above bpftrace's cost |",
        f(&o["tcp_conn_per_s"]["untraced"]),
        f(&o["tcp_ratio"]["inspector"]),
        f(&o["tcp_cost_us_per_connection"]["inspector"]),
        f(&o["tcp_ratio"]["serve"]),
        f(&o["tcp_cost_us_per_connection"]["serve"]),
        f(&o["tcp_ratio"]["bpftrace"]),
        f(&o["tcp_cost_us_per_connection"]["bpftrace"]),
    );
    let c = &o["cpu_us_per_connection"];
    let _ = writeln!(
        s,
        "| busy CPU per TCP connection, whole machine (us) | {:.1} | {:.1} | {:.1} | {:.1} | - |",
        f(&c["untraced"]),
        f(&c["inspector"]),
        f(&c["serve"]),
        f(&c["bpftrace"]),
    );
    let _ = writeln!(
        s,
        "| UDP datagrams/s, ratio vs untraced | {:.0}/s | {:.3} | {:.3} | {:.3} | >= 0.95 |",
        f(&o["udp_datagrams_per_s"]["untraced"]),
        f(&o["udp_ratio"]["inspector"]),
        f(&o["udp_ratio"]["serve"]),
        f(&o["udp_ratio"]["bpftrace"]),
    );
    let t = &o["syscall_tax_ns"];
    let _ = writeln!(
        s,
        "| syscall tax, ns per non-socket syscall (1-byte write to /dev/null) | {:.1} | {:.1} | {:.1} | {:.1} | untraced + ~0 |",
        f(&t["untraced"]),
        f(&t["inspector"]),
        f(&t["serve"]),
        f(&t["bpftrace"]),
    );
    let counted = |mode: &str, key: &str| -> Vec<String> {
        o["counts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["mode"] == mode)
            .map(|c| c["counted"][key].to_string())
            .collect()
    };
    let _ = writeln!(
        s,
        "| TCP state changes on the workload port, per round | - | {} | - | {} | equal |",
        counted("inspector", "state_changes_on_port").join(", "),
        counted("bpftrace", "state_changes_on_port").join(", "),
    );
    let _ = writeln!(
        s,
        "| events dropped by the inspector, per round | - | {} | - | - | 0 |",
        counted("inspector", "dropped").join(", "),
    );
    let _ = writeln!(
        s,
        "| tracer process CPU per round (ms) | - | {} | {} | {} | - |",
        counted("inspector", "tracer_cpu_ms").join(", "),
        counted("serve", "tracer_cpu_ms").join(", "),
        counted("bpftrace", "tracer_cpu_ms").join(", "),
    );
    let p = &r["pipeline_events_per_s"];
    let _ = writeln!(
        s,
        "| decode + tracker, one core | - | {:.2} M events/s | - | - | >= 2 M/s |",
        f(&p["decode_track"]) / 1e6
    );
    let _ = writeln!(
        s,
        "| decode + tracker + dashboard model, one core | - | {:.2} M events/s | - | - | >= 2 M/s |",
        f(&p["decode_track_model"]) / 1e6
    );
    if let Some(frames) = r["dashboard_frame_ms"].as_object() {
        for (k, v) in frames {
            let _ = writeln!(
                s,
                "| dashboard frame 160x48, {k} | - | {:.2} ms | - | - | < 2 ms |",
                f(v)
            );
        }
    }
    let m = &o["memory"];
    let _ = writeln!(
        s,
        "| inspector RSS after {} events | - | {} KiB (start {} KiB) | - | - | < 64 MiB |",
        m["events_target"], m["rss_kib_after_events"], m["rss_kib_start"]
    );
    if let Some(samples) = m["long_run"].as_array().filter(|a| !a.is_empty()) {
        let line: Vec<String> = samples
            .iter()
            .map(|x| format!("{}s: {} KiB", x["t_s"], x["rss_kib"]))
            .collect();
        let _ = writeln!(
            s,
            "| RSS over a 5-minute run at full rate | - | {} | - | - | flat, < 64 MiB |",
            line.join(", ")
        );
    }
    s
}

/// The report is well-formed: every figure present and plausible.
fn check(r: &Value) -> Result<()> {
    let o = &r["overhead"];
    for (what, v) in [
        ("untraced TCP rate", &o["tcp_conn_per_s"]["untraced"]),
        ("traced TCP rate", &o["tcp_conn_per_s"]["inspector"]),
        ("serve TCP rate", &o["tcp_conn_per_s"]["serve"]),
        ("bpftrace TCP rate", &o["tcp_conn_per_s"]["bpftrace"]),
        ("untraced syscall tax", &o["syscall_tax_ns"]["untraced"]),
        ("traced syscall tax", &o["syscall_tax_ns"]["inspector"]),
        ("untraced UDP rate", &o["udp_datagrams_per_s"]["untraced"]),
        ("traced UDP rate", &o["udp_datagrams_per_s"]["inspector"]),
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
