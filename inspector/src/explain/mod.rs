//! `inspector explain PORT`: who holds a port, and which kernel rule
//! decides a would-be `bind()` and `listen()` on it; `explain --connect
//! HOST:PORT`: whether a `connect()` gets a local port toward it.
//!
//! A request walks down, one step after the other, each in its own place:
//!
//! 1. `request`: check the request, resolve the namespace ([`Plan`]);
//! 2. `inventory`: read the kernel (the socket tables through BPF
//!    iterators, the namespace's sysctls and route), once;
//! 3. predict, without I/O: `bind` (the kernel's rules in `rules`, the
//!    advice in `advice`) or `connect`, siblings that share only the
//!    vocabulary (`outcome`, `words`);
//! 4. `probe` (`--probe` only): one real bind to check the prediction;
//! 5. `text`, or JSON: the answer for a person or a program.
//!
//! This module only calls them in that order. `pipeline::annotate` and
//! `serve` use the same steps through [`explain_with`] and
//! [`explain_connect_with`].

pub mod advice;
pub mod bind;
pub mod connect;
pub mod inventory;
pub mod outcome;
pub mod probe;
pub mod request;
pub mod rules;
pub mod text;
pub mod words;

use std::io::{self, IsTerminal as _, Write};

use self::inventory::{Holder, InventoryError, Source};
pub use self::{
    bind::{Blocker, Decision, Explanation},
    outcome::Outcome,
    request::{BadRequest, BindPlan, ConnectPlan, DEFAULT_ROWS, Destination, Plan, Request},
    words::fmt_addr,
};

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    /// Bad input: one line naming the problem and the fix.
    #[error(transparent)]
    Input(#[from] BadRequest),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error("writing the output")]
    Output(#[from] io::Error),
}

/// Explains a port: reads its sockets and predicts `bind()` and `listen()`
/// (`--probe` also binds for real).
pub fn explain(req: &Request) -> Result<Explanation, ExplainError> {
    explain_with(req, &mut Source::open(), |_| true)
}

/// [`explain`] from an already loaded `source`, with only the holders
/// `keep` accepts (the automatic explanation of a failure drops those
/// created after it, and names TIME_WAIT holders' last owners).
pub fn explain_with(
    req: &Request,
    source: &mut Source,
    keep: impl FnMut(&mut Holder) -> bool,
) -> Result<Explanation, ExplainError> {
    match request::plan(req)? {
        Plan::Bind(plan) => bind_with(&plan, source, keep),
        Plan::Connect(_) => Err(BadRequest(
            "a --connect request has no port verdict: ask for the connect() one".into(),
        )
        .into()),
    }
}

/// A planned `bind()`: read, predict, probe.
fn bind_with(
    plan: &BindPlan,
    source: &mut Source,
    keep: impl FnMut(&mut Holder) -> bool,
) -> Result<Explanation, ExplainError> {
    let mut inv = source.collect(plan.netns.as_deref(), plan.sock.port)?;
    inv.holders.retain_mut(keep);
    let mut e = bind::predict(plan, inv);
    if plan.probe {
        e.probe = Some(probe::run(plan, &e.bind, &e.listen));
    }
    Ok(e)
}

/// A planned `connect()`: read, predict; with only the holders `keep`
/// accepts (and may name the last owners of).
pub fn explain_connect_with(
    plan: &ConnectPlan,
    source: &mut Source,
    keep: impl FnMut(&mut Holder) -> bool,
) -> Result<connect::Explanation, ExplainError> {
    let mut facts =
        source.collect_for_connect(plan.netns.as_deref(), plan.destination.socket_addr())?;
    facts.inventory.holders.retain_mut(keep);
    Ok(connect::predict(plan, facts))
}

/// `inspector explain`: prints the answer as text or one JSON object.
pub fn command(req: &Request) -> Result<(), ExplainError> {
    let plan = request::plan(req)?;
    let mut source = Source::open();
    let stdout = io::stdout();
    let view = text::View {
        limit: req.limit,
        width: terminal_width(&stdout),
    };
    let mut out = stdout.lock();
    match plan {
        Plan::Bind(plan) => {
            let e = bind_with(&plan, &mut source, |_| true)?;
            if req.json {
                serde_json::to_writer(&mut out, &e).map_err(io::Error::other)?;
                writeln!(out)?;
            } else {
                text::write_bind(&e, view, &mut out)?;
            }
        }
        Plan::Connect(plan) => {
            let e = explain_connect_with(&plan, &mut source, |_| true)?;
            if req.json {
                serde_json::to_writer(&mut out, &e).map_err(io::Error::other)?;
                writeln!(out)?;
            } else {
                text::write_connect(&e, view, &mut out)?;
            }
        }
    }
    Ok(())
}

/// The terminal's width when printing to one; `COLUMNS` when set (a
/// script that wants wrapped text); otherwise nothing is wrapped.
fn terminal_width(stdout: &io::Stdout) -> Option<usize> {
    let columns = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c >= 40);
    if stdout.is_terminal() {
        crossterm::terminal::size()
            .ok()
            .map(|(w, _)| usize::from(w))
            .filter(|&w| w >= 40)
            .or(columns)
    } else {
        columns
    }
}
