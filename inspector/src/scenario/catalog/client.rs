//! The client side: ephemeral port exhaustion under TIME_WAIT and a
//! client that binds a fixed source port.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;

use super::Res;
use crate::scenario::{
    Outcome, ScenarioError, Verdict,
    ctx::{Ctx, Sock, accept_n, settle},
};

/// Connects `n` clients to `to` one after another, each closing first
/// (client-side TIME_WAIT); returns the errno of each attempt.
fn connect_and_close(
    ctx: &mut Ctx,
    listener: &Sock,
    to: &str,
    n: usize,
) -> Result<Vec<Option<String>>, ScenarioError> {
    let mut out = Vec::new();
    for i in 0..n {
        let c = ctx.tcp(&format!("client {i}"))?;
        let errno = ctx.connect(&c, to)?;
        let server_side = if errno.is_none() {
            accept_n(listener, 1, Duration::from_millis(200))
        } else {
            Vec::new()
        };
        out.push(errno);
        // The client closes first, so the TIME_WAIT is on its side.
        drop(c);
        settle();
        drop(server_side);
    }
    settle();
    Ok(out)
}

/// One exhaustion run in a fresh namespace: `tw_reuse` set, or the
/// namespace's default when `None`.
fn exhaustion_run(
    ctx: &mut Ctx,
    tw_reuse: Option<&str>,
) -> Result<serde_json::Value, ScenarioError> {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/ip_local_port_range", "40000 40003")?;
    let reuse = match tw_reuse {
        Some(v) => {
            ctx.sysctl("net/ipv4/tcp_tw_reuse", v)?;
            v.to_owned()
        }
        None => ctx.read_sysctl("net/ipv4/tcp_tw_reuse")?,
    };
    let timestamps = ctx.read_sysctl("net/ipv4/tcp_timestamps")?;
    let listener = ctx.tcp(&format!("server (tcp_tw_reuse={reuse})"))?;
    ctx.bind(&listener, "127.0.0.1:8018")?;
    ctx.listen(&listener, 64);
    let first = connect_and_close(ctx, &listener, "127.0.0.1:8018", 4)?;
    let at_once = connect_and_close(ctx, &listener, "127.0.0.1:8018", 1)?;
    // tcp_tw_reuse waits tcp_tw_reuse_delay (1 s) before reusing.
    std::thread::sleep(Duration::from_millis(1100));
    let again = connect_and_close(ctx, &listener, "127.0.0.1:8018", 2)?;
    ctx.hold(listener);
    Ok(json!({
        "tcp_tw_reuse": reuse,
        "tcp_timestamps": timestamps,
        "first_4": first,
        "at_once": at_once,
        "next_2": again,
    }))
}

pub(super) fn ephemeral_exhaustion(ctx: &mut Ctx) -> Res {
    // Judged on the kernel's defaults in a fresh namespace; the setting
    // that changes the outcome is a second, labelled run.
    let default = exhaustion_run(ctx, None)?;
    let off = exhaustion_run(ctx, Some("0"))?;
    let errnos = |r: &serde_json::Value| -> Vec<String> {
        ["at_once", "next_2"]
            .iter()
            .flat_map(|k| r[*k].as_array().cloned().unwrap_or_default())
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect()
    };
    let still_exhausted = |r: &serde_json::Value| {
        r["next_2"]
            .as_array()
            .is_some_and(|a| a.iter().all(|e| e.as_str() == Some("EADDRNOTAVAIL")))
    };
    // The claim's two parts: TIME_WAIT keeps the ports exhausted, and the
    // failure is "address already in use".
    let parts = |r: &serde_json::Value| {
        [
            still_exhausted(r),
            errnos(r).iter().any(|e| e == "EADDRINUSE"),
        ]
    };
    let verdict = Verdict::of(&parts(&default));
    let with_off = Verdict::of(&parts(&off));
    let default_reuse = default["tcp_tw_reuse"].as_str().unwrap_or("?").to_owned();
    let advice = (with_off != verdict).then(|| {
        format!(
            "{} by default (tcp_tw_reuse={default_reuse}); {} with tcp_tw_reuse=0: the ports \
             stay exhausted for 60 s, but connect() fails with EADDRNOTAVAIL, never \
             \"address already in use\"",
            verdict.as_str(),
            with_off.as_str()
        )
    });
    let show_run = |r: &serde_json::Value| {
        format!(
            "at once {}, after 1.1 s {}",
            r["at_once"][0].as_str().unwrap_or("connected"),
            if still_exhausted(r) {
                "EADDRNOTAVAIL"
            } else {
                "connected (TIME_WAIT reused)"
            }
        )
    };
    Ok(Outcome {
        reason: None,
        advice,
        verdict,
        summary: format!(
            "4 ephemeral ports, 4 connections closed by the client, then connects: defaults \
             (tcp_tw_reuse={default_reuse}): {}; with tcp_tw_reuse=0: {}",
            show_run(&default),
            show_run(&off)
        ),
        details: json!({ "default": default, "tcp_tw_reuse=0": off }),
        explanation: "connect() picks a port in __inet_hash_connect(); a port whose 4-tuple is \
            held by a TIME_WAIT socket is usable only if tcp_twsk_unique() lets it take the \
            socket over. The fresh-namespace default tcp_tw_reuse=2 allows that for loopback \
            peers (with timestamps) after tcp_tw_reuse_delay (1 s); 0, or a non-loopback peer \
            under 2, keeps every port taken for TCP_TIMEWAIT_LEN (60 s). Either way the error \
            is EADDRNOTAVAIL from connect(), not EADDRINUSE from bind()."
            .into(),
    })
}

pub(super) fn client_fixed_port(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    ctx.sysctl("net/ipv4/tcp_tw_reuse", "0")?;
    ctx.sysctl("net/ipv4/tcp_timestamps", "1")?;
    let listener = ctx.tcp("server")?;
    ctx.bind(&listener, "127.0.0.1:8019")?;
    ctx.listen(&listener, 8);
    let mut rounds = BTreeMap::new();
    for (round, reuse) in [("plain", false), ("SO_REUSEADDR", true)] {
        let c = ctx.tcp(&format!("client ({round})"))?;
        if reuse {
            ctx.reuseaddr(&c)?;
        }
        let port = if reuse {
            "127.0.0.1:41001"
        } else {
            "127.0.0.1:41000"
        };
        ctx.bind(&c, port)?;
        ctx.connect(&c, "127.0.0.1:8019")?;
        let server_side = accept_n(&listener, 1, Duration::from_millis(200));
        drop(c); // the client closes first: its side goes to TIME_WAIT
        settle();
        drop(server_side);
        settle();
        let again = ctx.tcp(&format!("client again ({round})"))?;
        if reuse {
            ctx.reuseaddr(&again)?;
        }
        let bind = ctx.bind(&again, port)?;
        let connect = if bind.is_none() {
            ctx.connect(&again, "127.0.0.1:8019")?
        } else {
            None
        };
        rounds.insert(round, json!({ "rebind": bind, "reconnect": connect }));
        ctx.expect_time_wait.push(if reuse { 41001 } else { 41000 });
    }
    let plain_blocked = rounds["plain"]["rebind"].as_str() == Some("EADDRINUSE");
    let reuse_rebinds = rounds["SO_REUSEADDR"]["rebind"].is_null();
    let reuse_reconnect = rounds["SO_REUSEADDR"]["reconnect"]
        .as_str()
        .map(str::to_owned);
    ctx.hold(listener);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[plain_blocked]),
        summary: format!(
            "rebinding the source port after closing: plain {}; with SO_REUSEADDR bind {} and \
             connect to the same server {}",
            rounds["plain"]["rebind"].as_str().unwrap_or("ok"),
            if reuse_rebinds { "ok" } else { "refused" },
            reuse_reconnect.as_deref().unwrap_or("ok")
        ),
        details: json!(rounds),
        explanation: "The client's TIME_WAIT socket holds its port: a plain bind() conflicts \
            (inet_bind_conflict()); with SO_REUSEADDR on both the bind succeeds, but the same \
            4-tuple is still in TIME_WAIT. connect() on an explicitly bound port asks \
            __inet_check_established() with no twp, and tcp_twsk_unique() then takes over a \
            TIME_WAIT socket that has TCP timestamps whatever tcp_tw_reuse says; without \
            timestamps it fails with EADDRNOTAVAIL."
            .into(),
    })
}
