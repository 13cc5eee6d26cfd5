//! Restarting a server over its own TIME_WAIT: plain, with SO_REUSEADDR,
//! with SO_REUSEPORT (`inet_csk_bind_conflict()` against a TIME_WAIT bucket).

use crate::kernel::Errno;
use serde_json::json;

use super::{Res, io, show};
use crate::scenario::{
    Outcome, ScenarioError, Verdict,
    ctx::{Ctx, settle},
};

/// A server on 127.0.0.1:`port` (with the given options) that served one
/// connection and closed it first, so its side of it is now TIME_WAIT;
/// the listener is closed too, as a server that exits.
fn server_left_time_wait(
    ctx: &mut Ctx,
    port: u16,
    reuseaddr: bool,
    reuseport: bool,
) -> Result<(), ScenarioError> {
    let old = ctx.tcp("old-server")?;
    if reuseaddr {
        ctx.reuseaddr(&old)?;
    }
    if reuseport {
        ctx.reuseport(&old)?;
    }
    let addr = format!("127.0.0.1:{port}");
    if let Some(e) = ctx.bind(&old, &addr)? {
        return Err(ScenarioError::Setup(format!("old server bind: {e}")));
    }
    if let Some(e) = ctx.listen(&old, 8) {
        return Err(ScenarioError::Setup(format!("old server listen: {e}")));
    }
    let client = ctx.tcp("client")?;
    if let Some(e) = ctx.connect(&client, &addr)? {
        return Err(ScenarioError::Setup(format!("client connect: {e}")));
    }
    let (conn, _) = io(old.sock.accept())?;
    drop(conn); // the server closes first: its side goes to TIME_WAIT
    settle();
    drop(client);
    drop(old);
    settle();
    ctx.expect_time_wait.push(port);
    ctx.note(format!(
        "old server on {addr} served one connection and closed it first; the server exited"
    ));
    Ok(())
}

/// A new server socket's bind + listen on 127.0.0.1:`port`.
fn restart(
    ctx: &mut Ctx,
    label: &str,
    port: u16,
    reuseaddr: bool,
    reuseport: bool,
) -> Result<Option<Errno>, ScenarioError> {
    let new = ctx.tcp(label)?;
    if reuseaddr {
        ctx.reuseaddr(&new)?;
    }
    if reuseport {
        ctx.reuseport(&new)?;
    }
    let mut errno = ctx.bind(&new, &format!("127.0.0.1:{port}"))?;
    if errno.is_none() {
        errno = ctx.listen(&new, 8);
    }
    Ok(errno)
}

pub(super) fn restart_plain(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    server_left_time_wait(ctx, 8001, false, false)?;
    let errno = restart(ctx, "new-server", 8001, false, false)?;
    let refused = errno == Some(Errno::EADDRINUSE);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[refused]),
        summary: format!("restart without SO_REUSEADDR: {}", show(&errno)),
        details: json!({ "restart": errno }),
        explanation: "inet_csk_get_port() finds the port's bind bucket still owned by the \
            timewait socket; inet_bind_conflict() lets a new socket share it only when both \
            have SO_REUSEADDR (sk_reuse, and tw_reuse copied from the closed socket) or both \
            SO_REUSEPORT (a TIME_WAIT holder's uid is not checked; a live holder's must \
            match)."
            .into(),
    })
}

/// A restart over TIME_WAIT with `option` set on the new socket only, then
/// on the old and the new one: (new only, old and new) results.
fn restart_with(
    ctx: &mut Ctx,
    port: u16,
    option: &str,
) -> Result<(Option<Errno>, Option<Errno>), ScenarioError> {
    let (addr, port_opt) = (option == "SO_REUSEADDR", option == "SO_REUSEPORT");
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    server_left_time_wait(ctx, port, false, false)?;
    let label = format!("new-server ({option}, old without)");
    let new_only = restart(ctx, &label, port, addr, port_opt)?;
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    server_left_time_wait(ctx, port, addr, port_opt)?;
    let both = restart(
        ctx,
        &format!("new-server ({option}, old too)"),
        port,
        addr,
        port_opt,
    )?;
    Ok((new_only, both))
}

fn restart_outcome(
    option: &str,
    new_only: Option<Errno>,
    both: Option<Errno>,
    why: &str,
) -> Outcome {
    Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[new_only.is_none(), both.is_none()]),
        summary: format!(
            "{option} on the new socket only: {}; on the old and the new: {}",
            show(&new_only),
            show(&both)
        ),
        details: json!({ "new_only": new_only, "old_and_new": both }),
        explanation: why.into(),
    }
}

pub(super) fn restart_reuseaddr(ctx: &mut Ctx) -> Res {
    let (new_only, both) = restart_with(ctx, 8002, "SO_REUSEADDR")?;
    Ok(restart_outcome(
        "SO_REUSEADDR",
        new_only,
        both,
        "The timewait socket keeps the SO_REUSEADDR of the socket it replaced (tw_reuse). \
         inet_bind_conflict() ignores a TIME_WAIT holder only when both it and the new socket \
         have sk_reuse: setting SO_REUSEADDR on the restarted server helps only if the old \
         server had it too. Set it on every listener, before the restart is needed.",
    ))
}

pub(super) fn restart_reuseport(ctx: &mut Ctx) -> Res {
    let (new_only, both) = restart_with(ctx, 8003, "SO_REUSEPORT")?;
    Ok(restart_outcome(
        "SO_REUSEPORT",
        new_only,
        both,
        "The timewait socket's tw_reuseport is copied from the closed socket. New socket \
         only: inet_bind_conflict() meets a TIME_WAIT holder without sk_reuseport and refuses. \
         Old and new: inet_csk_get_port() never reaches the conflict walk, because the bind \
         bucket still carries the fastreuseport state the old listener left and \
         sk_reuseport_match() accepts the new socket on that fast path (same uid, same \
         address); the walk would allow it too, since a TIME_WAIT holder's uid is not \
         checked.",
    ))
}
