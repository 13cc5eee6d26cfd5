//! Every scenario of the catalog on the live kernel: the eBPF evidence must
//! agree with what the driver saw through its syscalls, and the Linux facts
//! that do not depend on a hash must hold.

mod common;

use std::{collections::HashMap, process::Command};

use common::pipeline;
use inspector::{
    filter::Filter,
    scenario::{self, CATALOG, ScenarioResult},
};
use serde_json::Value;

fn errno(v: &Value) -> Option<&str> {
    v.as_str()
}

fn nonzero(v: &Value) -> usize {
    v.as_array()
        .map_or(0, |a| a.iter().filter(|c| c.as_u64() > Some(0)).count())
}

/// The Linux facts each scenario must show, whatever the claim says.
fn check_facts(r: &ScenarioResult) {
    let d = &r.observed["details"];
    let ctx = format!(
        "scenario {} {}: {}",
        r.number,
        r.name,
        serde_json::to_string_pretty(d).unwrap_or_default()
    );
    match r.number {
        1 => assert_eq!(errno(&d["restart"]), Some("EADDRINUSE"), "{ctx}"),
        2 | 3 => {
            assert_eq!(errno(&d["new_only"]), Some("EADDRINUSE"), "{ctx}");
            assert!(d["old_and_new"].is_null(), "{ctx}");
        }
        4 => assert_eq!(errno(&d["b_bind"]), Some("EADDRINUSE"), "{ctx}"),
        5 => {
            for k in ["a_bind", "b_bind", "a_listen"] {
                assert!(d[k].is_null(), "{k}: {ctx}");
            }
            assert_eq!(errno(&d["b_listen"]), Some("EADDRINUSE"), "{ctx}");
        }
        6 => {
            assert_eq!(
                errno(&d["specific_bind_while_wildcard_listens"]),
                Some("EADDRINUSE"),
                "{ctx}"
            );
            assert!(d["specific_bind_while_wildcard_bound"].is_null(), "{ctx}");
            assert_eq!(errno(&d["wildcard_listen"]), Some("EADDRINUSE"), "{ctx}");
        }
        7 => assert!(
            d["results"]
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_null)),
            "{ctx}"
        ),
        8 => {
            assert_eq!(
                nonzero(&d["per_socket_first"]),
                1,
                "one socket gets all unicast: {ctx}"
            );
            assert_eq!(nonzero(&d["per_socket_after"]), 1, "{ctx}");
        }
        9 => {
            let sent = d["sent"].as_u64();
            assert!(
                d["per_socket"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|c| c.as_u64() == sent)),
                "{ctx}"
            );
        }
        10 => {
            assert_eq!(d["sticky_sources"], d["sources"], "{ctx}");
            assert_eq!(
                d["spread"]["total"], 360,
                "every datagram delivered once: {ctx}"
            );
        }
        11 => {
            assert_eq!(
                d["fixed_port_listeners"], 1,
                "a fixed 4-tuple sticks: {ctx}"
            );
            assert_eq!(
                errno(&d["late_joiner_without_reuseport"]),
                Some("EADDRINUSE"),
                "{ctx}"
            );
            let total: u64 = d["per_listener"]
                .as_array()
                .map_or(0, |a| a.iter().filter_map(Value::as_u64).sum());
            assert_eq!(total, 150, "{ctx}");
        }
        12 => {
            assert_eq!(errno(&d["tcp"]), Some("EADDRINUSE"), "{ctx}");
            assert_eq!(errno(&d["udp"]), Some("EADDRINUSE"), "{ctx}");
        }
        13 => {
            assert_eq!(
                errno(&d["tcp_thief_bind_victim_plain"]),
                Some("EADDRINUSE"),
                "{ctx}"
            );
            assert_eq!(
                errno(&d["tcp_thief_bind_victim_reuseaddr"]),
                Some("EADDRINUSE"),
                "{ctx}"
            );
            assert!(d["udp_thief_bind"].is_null(), "{ctx}");
            assert_eq!(
                d["udp_thief_received_of_10"], 10,
                "the specific address wins: {ctx}"
            );
            assert_eq!(d["udp_victim_received_of_10"], 10, "{ctx}");
        }
        14 => {
            let next = |k: &str| d[k]["next_2"].as_array().cloned().unwrap_or_default();
            assert!(
                next("tcp_tw_reuse=0").iter().all(|e| e == "EADDRNOTAVAIL"),
                "{ctx}"
            );
            assert!(next("tcp_tw_reuse=1").iter().all(Value::is_null), "{ctx}");
        }
        15 => {
            assert_eq!(errno(&d["plain"]["rebind"]), Some("EADDRINUSE"), "{ctx}");
            assert!(d["SO_REUSEADDR"]["rebind"].is_null(), "{ctx}");
            assert!(
                d["SO_REUSEADDR"]["reconnect"].is_null(),
                "timestamps let it reuse: {ctx}"
            );
        }
        16 => {
            let on = &d["tcp_migrate_req=1"];
            assert_eq!(
                (on["reset"].as_u64(), on["accepted_by_new"].as_u64()),
                (Some(0), Some(40)),
                "{ctx}"
            );
            let off = &d["tcp_migrate_req=0"];
            let sum =
                off["reset"].as_u64().unwrap_or(0) + off["accepted_by_new"].as_u64().unwrap_or(0);
            assert_eq!(sum, 40, "every client is either reset or accepted: {ctx}");
        }
        17 => {
            assert_eq!(
                errno(&d["v6only=0"]["ipv4_wildcard"]),
                Some("EADDRINUSE"),
                "{ctx}"
            );
            assert_eq!(
                d["v6only=0"]["accepted_by_v6"], 1,
                "dual-stack takes IPv4: {ctx}"
            );
            assert!(d["v6only=1"]["ipv4_wildcard"].is_null(), "{ctx}");
            assert_eq!(d["v6only=1"]["accepted_by_v4"], 1, "{ctx}");
        }
        18 => {
            for k in ["tcp_conn_per_s", "udp_datagrams_per_s"] {
                assert!(
                    d[k]["one"].as_f64() > Some(0.0) && d[k]["four"].as_f64() > Some(0.0),
                    "{ctx}"
                );
            }
            assert!(d["cores"].as_u64() > Some(0), "{ctx}");
        }
        n => panic!("scenario {n} has no facts checked"),
    }
}

#[test]
fn every_scenario_runs_and_its_evidence_agrees_with_its_syscalls() {
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    let mut failures = Vec::new();
    for s in CATALOG {
        let r = scenario::run_traced(&mut p, s);
        eprintln!("{}", scenario::report::block(&r));
        assert!(r.error.is_none(), "{}: {:?}", s.name, r.error);
        assert!(r.verdict.is_some(), "{}", s.name);
        assert!(
            !r.namespaces.is_empty(),
            "{} ran in a namespace of its own",
            s.name
        );
        if !r.evidence_check.agrees {
            failures.push(format!("{}: {:?}", s.name, r.evidence_check.mismatches));
        }
        assert!(
            r.evidence_total > 0,
            "{}: the kernel reported nothing",
            s.name
        );
        check_facts(&r);
    }
    assert!(failures.is_empty(), "evidence disagrees: {failures:#?}");
    let c = p.counters();
    assert_eq!(c.dropped, 0, "no event lost");
}

#[test]
fn scenarios_with_failures_or_deliveries_are_cross_checked() {
    // Scenarios whose syscalls fail or whose sockets are SO_REUSEPORT
    // members must have something to check, or the check proves nothing.
    let Some(mut p) = pipeline(Filter::default()) else {
        return;
    };
    for name in [
        "restart-over-time-wait",
        "udp-reuseport-distribution",
        "tcp-reuseport-distribution",
        "ephemeral-exhaustion",
        "rolling-restart-reuseport",
    ] {
        let s = scenario::find(name).expect("in the catalog");
        let r = scenario::run_traced(&mut p, s);
        assert!(
            r.evidence_check.checked >= 2,
            "{name}: {:?}",
            r.evidence_check
        );
        assert!(r.evidence_check.agrees, "{name}: {:?}", r.evidence_check);
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_inspector");

#[test]
fn scenario_list_json_has_the_whole_catalog() {
    let out = Command::new(BIN)
        .args(["scenario", "list", "--json"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), CATALOG.len());
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["number"], i + 1);
        for k in ["name", "title", "claim", "source"] {
            assert!(l[k].is_string(), "{k}: {l}");
        }
    }
}

#[test]
fn unknown_scenario_is_a_one_line_error() {
    let out = Command::new(BIN)
        .args(["scenario", "run", "no-such"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no-such") && err.contains("scenario list"),
        "{err}"
    );
}

/// `scenario run --json` against docs/scenario-schema.md: every field with
/// its type, evidence in the trace schema.
#[test]
fn scenario_run_json_follows_its_schema() {
    if common::pipeline(Filter::default()).is_none() {
        return;
    }
    let out = Command::new(BIN)
        .args(["scenario", "run", "restart-over-time-wait", "12", "--json"])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(results.len(), 2);
    let types: HashMap<&str, fn(&Value) -> bool> = HashMap::from([
        ("number", Value::is_u64 as fn(&Value) -> bool),
        ("name", Value::is_string),
        ("title", Value::is_string),
        ("claim", Value::is_string),
        ("source", Value::is_string),
        ("verdict", Value::is_string),
        ("observed", Value::is_object),
        ("evidence", Value::is_array),
        ("evidence_total", Value::is_u64),
        ("evidence_check", Value::is_object),
        ("explanation", Value::is_string),
        ("namespaces", Value::is_array),
        ("duration_ms", Value::is_u64),
        ("error", Value::is_null),
    ]);
    for r in &results {
        let obj = r.as_object().expect("object");
        for (k, ok) in &types {
            assert!(obj.get(*k).is_some_and(ok), "{k} in {r}");
        }
        assert!(["confirmed", "refuted", "partly"].contains(&r["verdict"].as_str().unwrap_or("")));
        for k in ["summary", "setup", "calls", "deliveries", "details"] {
            assert!(r["observed"].get(k).is_some(), "observed.{k}");
        }
        assert_eq!(
            r["evidence_check"]["agrees"], true,
            "{}",
            r["evidence_check"]
        );
        for e in r["evidence"].as_array().expect("evidence") {
            assert_eq!(e["v"], 1);
            assert!(
                r["namespaces"]
                    .as_array()
                    .expect("ns")
                    .contains(&e["netns"])
            );
        }
    }
    assert_eq!(results[0]["number"], 1);
    assert_eq!(results[1]["number"], 12);
}
