//! inspector: watch the Linux kernel decide who gets a port.
//!
//! Domain logic lives in plain modules without a terminal: `probe` loads the
//! kernel programs, `tracker` attributes and assembles their events into
//! `record`s, `filter` selects them, `output` formats them, and `pipeline`
//! joins probes, tracker and filter into one source of records. Commands
//! (`trace`, `dashboard`, `scenario`, `serve`) only wire the pipeline to their output.

pub mod build_info;
pub mod cli;
pub mod commands;
pub mod explain;
#[doc(hidden)]
pub mod fixture;
pub mod kernel;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod recording;
pub mod scenario;
pub mod util;

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{
    cli::Cli,
    commands::{dashboard, serve, trace},
    kernel::{cgroup, netns, probe},
    model::filter::Filter,
};

/// Builds the record filter from the command line, checking what can be
/// checked before any probe is loaded.
pub fn filter_from_args(args: &cli::FilterArgs) -> anyhow::Result<Filter> {
    filter_for(args, true)
}

/// The filter for live records (`live`), or for a recording, whose
/// processes need not exist any more.
fn filter_for(args: &cli::FilterArgs, live: bool) -> anyhow::Result<Filter> {
    let netns = match &args.netns {
        Some(path) => Some(netns::inode(path)?),
        None => None,
    };
    if let Some(pid) = args.pid
        && live
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        bail!("no process with pid {pid} (check `ps -p {pid}`)");
    }
    Ok(Filter {
        ports: args.port.clone(),
        pid: args.pid,
        comm: args.comm.clone(),
        netns,
        proto: args.proto,
        failures_only: args.failures_only,
        cgroup: args
            .cgroup
            .as_deref()
            .map(|c| cgroup::normalize_filter(c, cgroup::v2_mount().as_deref())),
        container: args.container.clone(),
        lifecycle_states: false,
        decisions_only: false,
    })
}

/// The exit status of a failed run: 2 when the operator's own setting is
/// refused (a recording directory others may write in, a web config that
/// does not hold), 1 for everything else.
pub fn exit_status(e: &anyhow::Error) -> u8 {
    let refused = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<recording::DirError>(),
            Some(recording::DirError::Shared { .. })
        ) || matches!(
            c.downcast_ref::<recording::RecordError>(),
            Some(recording::RecordError::Dir(
                recording::DirError::Shared { .. }
            ))
        ) || c.downcast_ref::<serve::web::WebConfigError>().is_some()
    });
    if refused { 2 } else { 1 }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(cli::Command::Balance(args)) = &cli.command {
        // Its own checks of --netns and the port, each one line.
        return commands::balance::run(&args.to_options(&cli.filters, cli.mode)?).await;
    }
    let replaying = match &cli.command {
        Some(cli::Command::Trace(t)) => t.replay.is_some(),
        Some(cli::Command::Dashboard(d)) => d.replay.is_some(),
        _ => false,
    };
    let filter = filter_for(&cli.filters, !replaying)?;
    match cli.command {
        Some(cli::Command::Trace(t)) => {
            let filter = Filter {
                lifecycle_states: !t.states,
                decisions_only: !t.states && !t.connections,
                ..filter
            };
            let duration = match t.duration {
                Some(s) if !(s > 0.0 && s.is_finite()) => {
                    bail!("--duration must be a positive number of seconds, got {s}")
                }
                Some(s) => match Duration::try_from_secs_f64(s) {
                    Ok(d) => Some(d),
                    Err(_) => bail!("--duration {s} is too long (at most {} seconds)", u64::MAX),
                },
                None => None,
            };
            trace::run(trace::TraceOptions {
                filter,
                mode: cli.mode,
                json: t.json,
                duration,
                replay: t.replay,
                window: recording::Window {
                    since: t.since,
                    until: t.until,
                },
            })
            .await
        }
        Some(cli::Command::Record(args)) => {
            commands::record::run(commands::record::RecordOptions {
                filter,
                mode: cli.mode,
                dir: args.output,
                limits: recording::Limits {
                    max_size: args.max_size,
                    max_files: args.max_files,
                },
                shared: args.allow_shared_dir,
                netns_path: cli.filters.netns.clone(),
            })
            .await
        }
        Some(cli::Command::Scenario(cmd)) => scenario_command(cmd, cli.mode),
        Some(cli::Command::Serve(args)) => {
            serve::run(serve::ServeOptions {
                limits: serve::metrics::Limits {
                    ports: filter.ports.clone(),
                    max_ports: args.max_ports,
                    max_destinations: args.max_destinations,
                    max_series: args.max_series,
                    container_label: args.container_label,
                    socket_inode_label: args.label_socket_inode,
                    kubernetes: args.kubernetes,
                },
                pods_dir: args.pods_dir,
                version: env!("CARGO_PKG_VERSION"),
                commit: build_info::GIT_COMMIT,
                filter,
                netns_path: cli.filters.netns.clone(),
                mode: cli.mode,
                listen: args.listen,
                record: args.record,
                record_shared: args.allow_shared_dir,
                web_config: args.web_config,
            })
            .await
        }
        Some(cli::Command::Explain(args)) => Ok(explain::command(&args.to_request(&cli.filters)?)?),
        Some(cli::Command::Dashboard(cli::DashboardArgs {
            replay: Some(path),
            speed,
            step,
            since,
            until,
        })) => {
            let window = recording::Window { since, until };
            dashboard::replay::run(&path, filter, speed, step, window).await
        }
        Some(cli::Command::Dashboard(_)) | None => dashboard::run(filter, cli.mode).await,
        Some(cli::Command::Balance(args)) => {
            commands::balance::run(&args.to_options(&cli.filters, cli.mode)?).await
        }
    }
}

fn scenario_command(cmd: cli::ScenarioCommand, mode: probe::Mode) -> anyhow::Result<()> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (names, all, json) = match cmd {
        cli::ScenarioCommand::List { json: true } => {
            for s in scenario::CATALOG {
                let line = serde_json::json!({
                    "number": s.number, "name": s.name, "title": s.title,
                    "claim": s.claim, "source": s.source,
                });
                writeln!(out, "{line}")?;
            }
            return Ok(());
        }
        cli::ScenarioCommand::List { json: false } => {
            write!(out, "{}", scenario::report::list())?;
            return Ok(());
        }
        cli::ScenarioCommand::Run { names, all, json } => (names, all, json),
    };
    let chosen: Vec<&'static scenario::Scenario> = if all {
        scenario::CATALOG.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                scenario::find(n).with_context(|| {
                    format!("no scenario {n:?}: `inspector scenario list` shows the catalog")
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut pipeline = pipeline::Pipeline::new(Filter::default(), mode)?;
    let mut results = Vec::new();
    for s in chosen {
        if !json {
            eprintln!("running {} {} ...", s.number, s.name);
        }
        let r = scenario::run_traced(&mut pipeline, s);
        if json {
            serde_json::to_writer(&mut out, &r)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{}", scenario::report::block(&r))?;
        }
        out.flush()?;
        results.push(r);
    }
    let c = pipeline.counters();
    if !json {
        writeln!(out, "{}", scenario::report::tally(&results))?;
    }
    eprintln!(
        "inspector: {} events read, {} dropped (ring buffer full), {} kernel read errors",
        pipeline.seen, c.dropped, c.read_errors
    );
    Ok(())
}
