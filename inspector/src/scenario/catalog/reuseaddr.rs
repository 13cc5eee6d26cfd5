//! Bind conflicts between TCP sockets: SO_REUSEADDR while listening or
//! only bound, wildcard against specific addresses, distinct addresses and
//! ports, and dual-stack `[::]` against `0.0.0.0`.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;

use super::{Res, show};
use crate::scenario::{
    Outcome, Verdict,
    ctx::{Ctx, Proto, accept_n},
};

pub(super) fn reuseaddr_while_listening(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let a = ctx.tcp("a")?;
    let b = ctx.tcp("b")?;
    ctx.reuseaddr(&a)?;
    ctx.reuseaddr(&b)?;
    let a_bind = ctx.bind(&a, "127.0.0.1:8004")?;
    let a_listen = ctx.listen(&a, 8);
    let b_bind = ctx.bind(&b, "127.0.0.1:8004")?;
    // The claim: SO_REUSEADDR gives no second bind next to a listener.
    let refused = a_listen.is_none() && b_bind.is_some();
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[refused]),
        summary: format!(
            "a bind {}, a listen {}, b bind {}",
            show(&a_bind),
            show(&a_listen),
            show(&b_bind)
        ),
        details: json!({ "a_bind": a_bind, "a_listen": a_listen, "b_bind": b_bind }),
        explanation: "inet_bind_conflict(): two sk_reuse sockets share a port only while the \
            holder is not in LISTEN. A listening socket owns its address:port exclusively; \
            SO_REUSEADDR on Linux is for TIME_WAIT and not-yet-listening sockets, not for two \
            live listeners (that is SO_REUSEPORT)."
            .into(),
    })
}

pub(super) fn reuseaddr_bind_both_then_listen(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let a = ctx.tcp("a")?;
    let b = ctx.tcp("b")?;
    ctx.reuseaddr(&a)?;
    ctx.reuseaddr(&b)?;
    let a_bind = ctx.bind(&a, "127.0.0.1:8005")?;
    let b_bind = ctx.bind(&b, "127.0.0.1:8005")?;
    let a_listen = ctx.listen(&a, 8);
    let b_listen = ctx.listen(&b, 8);
    let both_bound = a_bind.is_none() && b_bind.is_none();
    let both_listen = a_listen.is_none() && b_listen.is_none();
    Ok(Outcome {
        reason: None,
        advice: None,
        // The claim: no two binds. Both bind; only the listen is refused.
        verdict: Verdict::of(&[!both_bound, !both_listen]),
        summary: format!(
            "binds: a {}, b {}; listens: a {}, b {}",
            show(&a_bind),
            show(&b_bind),
            show(&a_listen),
            show(&b_listen)
        ),
        details: json!({ "a_bind": a_bind, "b_bind": b_bind, "a_listen": a_listen, "b_listen": b_listen }),
        explanation: "Both binds pass inet_bind_conflict() (both sk_reuse, neither listening), \
            but listen() runs the check again: inet_csk_listen_start() -> inet_csk_get_port() \
            now finds a LISTEN holder and returns EADDRINUSE. The error surfaces at listen(), \
            not at bind()."
            .into(),
    })
}

pub(super) fn wildcard_plus_specific(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let wild = ctx.tcp("wildcard (listening)")?;
    let spec = ctx.tcp("specific")?;
    ctx.reuseaddr(&wild)?;
    ctx.reuseaddr(&spec)?;
    ctx.bind(&wild, "0.0.0.0:8006")?;
    ctx.listen(&wild, 8);
    let listening = ctx.bind(&spec, "127.0.0.1:8006")?;
    drop((wild, spec));
    let wild = ctx.tcp("wildcard (bound only)")?;
    let spec = ctx.tcp("specific 2")?;
    ctx.reuseaddr(&wild)?;
    ctx.reuseaddr(&spec)?;
    ctx.bind(&wild, "0.0.0.0:8006")?;
    let bound = ctx.bind(&spec, "127.0.0.1:8006")?;
    let spec_listen = if bound.is_none() {
        ctx.listen(&spec, 8)
    } else {
        None
    };
    let wild_listen = ctx.listen(&wild, 8);
    Ok(Outcome {
        reason: None,
        advice: None,
        // The claim: with SO_REUSEADDR the pair is fine.
        verdict: Verdict::of(&[
            listening.is_none(),
            bound.is_none(),
            spec_listen.is_none() && wild_listen.is_none(),
        ]),
        summary: format!(
            "specific bind while the wildcard listens: {}; while it is only bound: {}, \
             then listen: specific {}, wildcard {}",
            show(&listening),
            show(&bound),
            show(&spec_listen),
            show(&wild_listen)
        ),
        details: json!({
            "specific_bind_while_wildcard_listens": listening,
            "specific_bind_while_wildcard_bound": bound,
            "specific_listen": spec_listen,
            "wildcard_listen": wild_listen,
        }),
        explanation: "inet_rcv_saddr_equal() treats 0.0.0.0 as equal to every address, so a \
            wildcard and a specific socket on one port conflict like two identical ones: \
            allowed while neither listens and both have SO_REUSEADDR, refused once one listens \
            (inet_bind_conflict(): holder in LISTEN). On 6.x inet_csk_bind_conflict() finds \
            the pairs through bhash2: a specific bind meets the wildcard holders in \
            inet_bhash2_addr_any_conflict(), a wildcard bind walks every address of the port. \
            Whichever listens second gets EADDRINUSE."
            .into(),
    })
}

pub(super) fn different_addresses(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let a = ctx.tcp("a 127.0.0.1:8007")?;
    let b = ctx.tcp("b 127.0.0.2:8007")?;
    let c = ctx.tcp("c 127.0.0.1:8008")?;
    let mut results = Vec::new();
    for (s, addr) in [
        (&a, "127.0.0.1:8007"),
        (&b, "127.0.0.2:8007"),
        (&c, "127.0.0.1:8008"),
    ] {
        let mut e = ctx.bind(s, addr)?;
        if e.is_none() {
            e = ctx.listen(s, 8);
        }
        results.push(e);
    }
    let all_ok = results.iter().all(Option::is_none);
    Ok(Outcome {
        reason: None,
        advice: None,
        verdict: Verdict::of(&[all_ok]),
        summary: format!(
            "127.0.0.1:8007 {}, 127.0.0.2:8007 {}, 127.0.0.1:8008 {} (bind + listen, no options)",
            show(&results[0]),
            show(&results[1]),
            show(&results[2])
        ),
        details: json!({ "results": results }),
        explanation: "Ports are separate bind buckets; within one port, inet_rcv_saddr_equal() \
            compares addresses, and two distinct specific addresses never match (only a \
            wildcard matches everything)."
            .into(),
    })
}

pub(super) fn dual_stack(ctx: &mut Ctx) -> Res {
    ctx.fresh_netns()?;
    let mut rows = BTreeMap::new();
    for (v6only, port) in [(false, 8021u16), (true, 8022)] {
        let six = ctx.socket(
            &format!("[::]:{port} V6ONLY={}", u8::from(v6only)),
            Proto::Tcp,
            true,
        )?;
        ctx.v6only(&six, v6only)?;
        ctx.bind(&six, &format!("[::]:{port}"))?;
        ctx.listen(&six, 8);
        let four = ctx.tcp(&format!("0.0.0.0:{port}"))?;
        let mut errno = ctx.bind(&four, &format!("0.0.0.0:{port}"))?;
        if errno.is_none() {
            errno = ctx.listen(&four, 8);
        }
        // Who answers an IPv4 client?
        let client = ctx.tcp("v4 client")?;
        let connect = ctx.connect(&client, &format!("127.0.0.1:{port}"))?;
        let by_six = accept_n(&six, 1, Duration::from_millis(100)).len();
        let by_four = accept_n(&four, 1, Duration::from_millis(100)).len();
        rows.insert(
            format!("v6only={}", u8::from(v6only)),
            json!({ "ipv4_wildcard": errno, "v4_connect": connect, "accepted_by_v6": by_six, "accepted_by_v4": by_four }),
        );
        ctx.hold(six);
        ctx.hold(four);
    }
    let coexist_dual = rows["v6only=0"]["ipv4_wildcard"].is_null();
    let coexist_v6only = rows["v6only=1"]["ipv4_wildcard"].is_null();
    Ok(Outcome {
        reason: None,
        advice: None,
        // The claim: they conflict without V6ONLY and coexist with it.
        verdict: Verdict::of(&[!coexist_dual, coexist_v6only]),
        summary: format!(
            "0.0.0.0:P next to a listening [::]:P: with V6ONLY=0 {}; with V6ONLY=1 {}",
            rows["v6only=0"]["ipv4_wildcard"].as_str().unwrap_or("ok"),
            rows["v6only=1"]["ipv4_wildcard"].as_str().unwrap_or("ok")
        ),
        details: json!(rows),
        explanation: "A [::] socket without IPV6_V6ONLY also accepts IPv4 (v4-mapped). The \
            0.0.0.0 bind is AF_INET, so inet_rcv_saddr_equal() compares through \
            ipv4_rcv_saddr_equal(..., ipv6_only_sock(sk2)): the [::] holder's IPv4 address is \
            0 and, not being v6-only, it matches the wildcard, so the bind conflicts; with \
            IPV6_V6ONLY=1 the holder never matches an IPv4 address and both bind. The default \
            comes from net.ipv6.bindv6only (0)."
            .into(),
    })
}
