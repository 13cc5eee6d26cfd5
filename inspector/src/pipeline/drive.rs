//! The one loop every front end runs: records from a [`Source`] into a
//! [`Sink`] (`trace` prints them, `record` writes them, `serve` counts
//! them, the dashboard shows them), the sink's own input (a scrape, a key)
//! beside them, and the end (SIGTERM, SIGINT, a deadline, the end of a
//! recording, or the sink deciding) handled once, here.

use std::{future::Future, pin::Pin, time::Duration};

use tokio::signal::unix::{Signal, SignalKind, signal};

use super::source::Source;
use crate::{model::record::Record, recording::Line};

/// Whether the loop goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

/// What a front end does with the records.
pub trait Sink {
    /// The sink's own input besides the records.
    type Input;

    /// Takes the records read since the last call (possibly none: it is
    /// then a tick, every 100 ms or so). `src` gives the clock, the
    /// counters and, live, the pipeline.
    fn records(&mut self, src: &mut Source, records: &mut Vec<Record>) -> anyhow::Result<Flow>;

    /// A recording's header and `stats` lines, in order with its records.
    fn recorded(&mut self, _line: Line) -> anyhow::Result<()> {
        Ok(())
    }

    /// The next input of the sink's own; none by default. `None` means it
    /// closed (the terminal went away): the loop ends.
    fn input(&mut self) -> impl Future<Output = Option<Self::Input>> {
        std::future::pending()
    }

    /// Takes one input.
    fn on_input(&mut self, _src: &mut Source, _input: Self::Input) -> anyhow::Result<Flow> {
        Ok(Flow::Continue)
    }

    /// The end: the last records have been given to [`Sink::records`].
    fn finish(&mut self, _src: &mut Source) -> anyhow::Result<()> {
        Ok(())
    }
}

/// What ends a run from outside: SIGTERM, SIGINT, and a deadline.
pub struct Stop {
    term: Signal,
    int: Signal,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Stop {
    /// SIGTERM and SIGINT end the run; so does `after`, when given. Needs a
    /// tokio runtime.
    pub fn new(after: Option<Duration>) -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            deadline: after.map(|d| Box::pin(tokio::time::sleep(d))),
        })
    }

    /// Ends the run `after` from now (`trace --duration`, counted from
    /// when the probes are attached).
    pub fn set_deadline(&mut self, after: Duration) {
        self.deadline = Some(Box::pin(tokio::time::sleep(after)));
    }

    async fn wait(&mut self) {
        let deadline = async {
            match &mut self.deadline {
                Some(d) => d.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
            () = deadline => {}
        }
    }
}

/// The loop's buffers, kept between steps.
#[derive(Default)]
pub struct Driver {
    batch: Vec<Record>,
    lines: Vec<Line>,
}

enum Turn<I> {
    Ready,
    Input(Option<I>),
    Stop,
}

impl Driver {
    /// One turn: waits for records, the sink's input or the end, and hands
    /// over what came.
    pub async fn step<S: Sink>(
        &mut self,
        src: &mut Source,
        sink: &mut S,
        stop: &mut Stop,
    ) -> anyhow::Result<Flow> {
        let turn = tokio::select! {
            () = src.ready() => Turn::Ready,
            i = sink.input() => Turn::Input(i),
            () = stop.wait() => Turn::Stop,
        };
        match turn {
            Turn::Ready => {
                let more = src.read(&mut self.batch, &mut self.lines, false)?;
                // A read stops at a recording's header or `stats` line:
                // the records read before it go first.
                let flow = sink.records(src, &mut self.batch)?;
                self.batch.clear();
                self.hand_over(src, sink)?;
                Ok(if more { flow } else { Flow::Quit })
            }
            Turn::Input(Some(i)) => sink.on_input(src, i),
            Turn::Input(None) | Turn::Stop => Ok(Flow::Quit),
        }
    }

    fn hand_over<S: Sink>(&mut self, _src: &mut Source, sink: &mut S) -> anyhow::Result<()> {
        for line in self.lines.drain(..) {
            sink.recorded(line)?;
        }
        Ok(())
    }

    /// The end of a run: what the kernel still holds (TIME_WAIT exits
    /// resolved now), then [`Sink::finish`].
    pub fn finish<S: Sink>(&mut self, src: &mut Source, sink: &mut S) -> anyhow::Result<()> {
        if matches!(src, Source::Live(_)) {
            src.read(&mut self.batch, &mut self.lines, true)?;
            sink.records(src, &mut self.batch)?;
            self.batch.clear();
            self.hand_over(src, sink)?;
        }
        sink.finish(src)
    }
}

/// Runs `sink` on `src` until the sink quits, its input closes, the source
/// ends or `stop` says so.
pub async fn run<S: Sink>(src: &mut Source, sink: &mut S, stop: &mut Stop) -> anyhow::Result<()> {
    let mut driver = Driver::default();
    while driver.step(src, sink, stop).await? == Flow::Continue {}
    driver.finish(src, sink)
}
