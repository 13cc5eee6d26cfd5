//! The live dashboard: the same pipeline as `trace`, a model of what it
//! reports, and a terminal view. Event intake and drawing are decoupled:
//! records are drained whenever the ring buffer is readable, frames are drawn
//! at most every 100 ms, so a burst of events never stalls the screen.

pub mod app;
pub mod model;
pub mod ui;

use std::{
    io::{self, IsTerminal as _},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use crossterm::{
    event::{self, Event},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};
use tokio::{signal::unix::SignalKind, sync::mpsc};

use self::app::{Action, App, Header, Input};
use crate::{
    filter::Filter,
    scenario::{self, Running},
    trace::{Pipeline, monotonic_ns},
};

/// Puts the terminal back however the dashboard ends: normal return, `?`
/// error, or panic (see the hook in [`run`]).
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        enable_raw_mode()?;
        if let Err(e) = execute!(io::stdout(), EnterAlternateScreen) {
            let _ = disable_raw_mode();
            return Err(e);
        }
        Ok(Self)
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

pub async fn run(filter: Filter, mode: crate::probe::Mode) -> anyhow::Result<()> {
    if !io::stdout().is_terminal() || !io::stdin().is_terminal() {
        bail!(
            "the dashboard needs a terminal; for a headless stream use `inspector trace` (or `--json`)"
        );
    }
    let filters = filter.describe();
    let mut pipeline = Pipeline::new(filter, mode)?;
    let header = Header {
        mode: pipeline.probes.mode,
        probes: pipeline.probes.attached.len(),
        filters,
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let mut app = App::new(header, no_color);

    let ring = pipeline.readiness()?;
    let mut sigterm = tokio::signal::unix::signal(SignalKind::terminate())?;

    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
    let _guard = TerminalGuard::enter().context("cannot switch the terminal to raw mode")?;
    let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;

    // Terminal input on a thread of its own: crossterm's read blocks.
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("inspector-keys".into())
        .spawn(move || {
            while let Ok(ev) = event::read() {
                if keys_tx.send(ev).is_err() {
                    break;
                }
            }
        })?;

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut running: Option<(Running, Vec<crate::record::Record>)> = None;
    let mut batch = Vec::new();
    let mut annotator = crate::explain::annotate::Annotator::default();
    let mut dirty = true;
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    loop {
        let mut actions = Vec::new();
        tokio::select! {
            guard = ring.readable() => {
                let mut guard = guard?;
                guard.clear_ready();
            }
            _ = tick.tick() => {
                let counters = pipeline.counters();
                actions.extend(app.update(Input::Tick { counters, now_ns: monotonic_ns() }));
                dirty = true;
            }
            ev = keys.recv() => match ev {
                Some(Event::Key(k)) if k.kind != event::KeyEventKind::Release => {
                    actions.extend(app.update(Input::Key(k)));
                    dirty = true;
                }
                Some(Event::Resize(..)) => dirty = true,
                Some(_) => {}
                None => actions.push(Action::Quit),
            },
            _ = sigterm.recv() => actions.push(Action::Quit),
        }
        // Intake: everything the kernel has so far.
        pipeline.poll(&mut batch, false);
        annotator.annotate(&mut batch);
        if let Some((run, evidence)) = &mut running {
            let ns = run.namespaces();
            evidence.extend(batch.iter().filter(|r| ns.contains(&r.netns)).cloned());
            if !ns.is_empty() && app.namespaces.as_ref() != Some(&ns) {
                let first = app.namespaces.is_none()
                    || app.namespaces.as_ref().is_some_and(|a| !ns.starts_with(a));
                actions.extend(app.update(if first {
                    Input::ScenarioStarted { namespaces: ns }
                } else {
                    Input::FollowNamespaces(ns)
                }));
            }
        }
        if !batch.is_empty() {
            actions.extend(app.update(Input::Records(std::mem::take(&mut batch))));
            dirty = true;
        }
        if running.as_ref().is_some_and(|(run, _)| run.is_finished())
            && let Some((run, mut evidence)) = running.take()
        {
            // Trailing loopback and timer events, and pending TIME_WAIT
            // detaches resolved now.
            tokio::time::sleep(Duration::from_millis(30)).await;
            pipeline.poll(&mut batch, true);
            let ns = run.namespaces();
            evidence.extend(batch.iter().filter(|r| ns.contains(&r.netns)).cloned());
            actions.extend(app.update(Input::Records(std::mem::take(&mut batch))));
            let result = run.finish(evidence);
            actions.extend(app.update(Input::ScenarioFinished(Box::new(result))));
            dirty = true;
        }
        for action in actions {
            match action {
                Action::Quit => return Ok(()),
                Action::RunScenario(s) => match scenario::start(s) {
                    Ok(run) => running = Some((run, Vec::new())),
                    Err(e) => {
                        let r = scenario::not_started(s, &e.to_string());
                        app.update(Input::ScenarioFinished(Box::new(r)));
                    }
                },
            }
        }
        if dirty && last_draw.elapsed() >= Duration::from_millis(100) {
            terminal.draw(|f| ui::render(&app, f))?;
            last_draw = Instant::now();
            dirty = false;
        }
    }
}

#[cfg(test)]
mod tests;
