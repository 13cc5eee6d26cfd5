//! inspector: watch the Linux kernel decide who gets a port.
//!
//! Domain logic lives in plain modules without a terminal: `probe` loads the
//! kernel programs, `tracker` attributes and assembles their events into
//! `record`s, `filter` selects them, `output` formats them. Commands (`trace`)
//! only wire these together.

pub mod btf;
pub mod cli;
pub mod filter;
pub mod names;
pub mod netns;
pub mod output;
pub mod probe;
pub mod record;
pub mod trace;
pub mod tracker;

use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::{cli::Cli, filter::Filter};

/// Builds the record filter from the command line, checking what can be
/// checked before any probe is loaded.
pub fn filter_from_args(args: &cli::FilterArgs) -> anyhow::Result<Filter> {
    let netns = match &args.netns {
        Some(path) => Some(probe::netns_inode(path).with_context(|| {
            format!(
                "cannot open network namespace {}: give a namespace file such as \
                 /proc/PID/ns/net or /run/netns/NAME",
                path.display()
            )
        })?),
        None => None,
    };
    if let Some(pid) = args.pid
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
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let filter = filter_from_args(&cli.filters)?;
    match cli.command {
        Some(cli::Command::Trace(t)) => {
            let duration = match t.duration {
                Some(s) if !(s > 0.0 && s.is_finite()) => {
                    bail!("--duration must be a positive number of seconds, got {s}")
                }
                Some(s) => Some(Duration::from_secs_f64(s)),
                None => None,
            };
            trace::run(trace::TraceOptions {
                filter,
                json: t.json,
                duration,
            })
            .await
        }
        None => {
            trace::run(trace::TraceOptions {
                filter,
                json: false,
                duration: None,
            })
            .await
        }
    }
}
