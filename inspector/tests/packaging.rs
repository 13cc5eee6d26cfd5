//! The shipped systemd unit and DaemonSet against what the code asks for:
//! one list of capabilities (`build_info::CAPABILITIES`, which
//! `inspector --version` prints), granted exactly by both; loopback-only
//! listening; the settings the agent needs to work as shipped; the alert
//! rules, checked and unit-tested by promtool, each with its runbook.
//! Needs no privilege: it reads files. (`cargo xtask dist-test` runs them.)

mod common;

use std::{path::PathBuf, process::Command};

use common::serve::tool;

use inspector::build_info::CAPABILITIES;
use yaml_rust2::{Yaml, YamlLoader};

fn packaging(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn wanted() -> Vec<String> {
    CAPABILITIES
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .collect()
}

/// The values of `key=` in the unit's [Service] section, one per line.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    unit.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

fn daemonset() -> Yaml {
    let docs = YamlLoader::load_from_str(&packaging("daemonset.yaml")).expect("valid YAML");
    docs.into_iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("daemonset.yaml holds a DaemonSet")
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

#[test]
fn the_unit_grants_exactly_the_capabilities_the_code_asks_for() {
    let unit = packaging("inspector.service");
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let values = unit_values(&unit, key);
        assert_eq!(
            values.len(),
            1,
            "{key}= appears once in the unit: {values:?}"
        );
        let granted: Vec<String> = values[0].split_whitespace().map(str::to_owned).collect();
        assert_eq!(granted, wanted(), "{key}= of inspector.service");
    }
}

#[test]
fn the_daemonset_grants_exactly_the_capabilities_the_code_asks_for() {
    let ds = daemonset();
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_vec()
        .expect("containers");
    assert_eq!(containers.len(), 1, "one container");
    let caps = &containers[0]["securityContext"]["capabilities"];
    assert_eq!(strings(&caps["drop"]), ["ALL"]);
    let added: Vec<String> = strings(&caps["add"])
        .into_iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    assert_eq!(added, wanted(), "capabilities.add of daemonset.yaml");
    assert_eq!(
        containers[0]["securityContext"]["privileged"].as_bool(),
        Some(false)
    );
}

#[test]
fn the_binary_prints_the_same_capabilities() {
    let out = Command::new(env!("CARGO_BIN_EXE_inspector"))
        .arg("--version")
        .output()
        .expect("run inspector --version");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("capabilities "))
        .unwrap_or_else(|| panic!("no capabilities line in:\n{text}"));
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), wanted());
    for prefix in ["inspector ", "commit ", "kernel programs sha256:"] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "no `{prefix}` line in:\n{text}"
        );
    }
}

#[test]
fn both_listen_on_loopback_only() {
    let unit = packaging("inspector.service");
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    assert!(
        exec[0].contains(" serve --listen 127.0.0.1:"),
        "the unit's serve listens on loopback: {}",
        exec[0]
    );
    let ds = daemonset();
    let args = strings(&ds["spec"]["template"]["spec"]["containers"][0]["args"]);
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .expect("the DaemonSet names --listen");
    assert!(
        listen.starts_with("127.0.0.1:"),
        "DaemonSet --listen {listen}"
    );
}

#[test]
fn the_unit_keeps_what_the_agent_needs() {
    let unit = packaging("inspector.service");
    // Both hide /proc/kallsyms (ProtectKernelLogs by dropping CAP_SYSLOG),
    // where the TIME_WAIT timer's callback is looked up.
    for hides_kallsyms in ["ProtectKernelTunables", "ProtectKernelLogs"] {
        assert!(
            unit_values(&unit, hides_kallsyms).iter().all(|v| v == "no"),
            "{hides_kallsyms}= hides /proc/kallsyms from the agent"
        );
    }
    for (key, value) in [
        ("StateDirectory", "inspector"),
        ("StateDirectoryMode", "0700"),
        ("MemoryMax", "256M"),
        ("LimitNOFILE", "8192"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert_eq!(unit_values(&unit, key), [value], "{key}=");
    }
    let exec = unit_values(&unit, "ExecStart");
    assert!(exec[0].starts_with("/usr/bin/inspector "), "{}", exec[0]);
}

#[test]
fn the_daemonset_mounts_tracefs_and_pod_logs() {
    let ds = daemonset();
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["hostPID"].as_bool(), Some(true));
    assert!(pod["priorityClassName"].as_str().is_some());
    assert_eq!(
        ds["spec"]["updateStrategy"]["type"].as_str(),
        Some("RollingUpdate")
    );
    let container = &pod["containers"][0];
    assert!(
        container["resources"]["limits"]["memory"]
            .as_str()
            .is_some()
    );
    assert!(
        container["resources"]["requests"]["memory"]
            .as_str()
            .is_some()
    );
    let volumes = pod["volumes"].as_vec().expect("volumes");
    for path in [
        "/sys/kernel/tracing",
        "/var/log/pods",
        "/var/log/containers",
    ] {
        let volume = volumes
            .iter()
            .find(|v| v["hostPath"]["path"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("no hostPath volume {path}"));
        let name = volume["name"].as_str().expect("volume name");
        let mount = container["volumeMounts"]
            .as_vec()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name} is not mounted"));
        assert_eq!(mount["mountPath"].as_str(), Some(path));
        assert_eq!(mount["readOnly"].as_bool(), Some(true), "{path} read-only");
    }
}

fn packaging_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(name)
}

/// `promtool ARGS`, asserted to succeed; skipped (failing in CI) without
/// promtool.
fn promtool(args: &[&str], file: &str) {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(args)
        .arg(packaging_path(file))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool {} {file}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn packaged_alert_rules_pass_promtool_check() {
    promtool(&["check", "rules"], "alerts.yml");
}

/// alerts_test.yml replays each incident (one burst of bind failures then
/// silence, a starved SO_REUSEPORT member, a member that stops accepting
/// and one that is busy but accepts, ephemeral ports near the end of a
/// pod's range, TIME_WAIT piling up) against the rules.
#[test]
fn packaged_alert_rules_fire_on_their_incidents() {
    promtool(&["test", "rules"], "alerts_test.yml");
}

#[test]
fn every_alert_has_a_runbook_and_a_test() {
    let rules = YamlLoader::load_from_str(&packaging("alerts.yml")).expect("valid YAML");
    let tests = packaging("alerts_test.yml");
    let mut alerts = Vec::new();
    for group in rules[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            if let Some(name) = rule["alert"].as_str() {
                alerts.push(name.to_owned());
                let url = rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} has no runbook_url"));
                assert_eq!(url, format!("docs/runbooks/{name}.md"));
                let runbook = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join(url);
                let text = std::fs::read_to_string(&runbook)
                    .unwrap_or_else(|e| panic!("{}: {e}", runbook.display()));
                assert!(
                    text.contains("inspector "),
                    "{name}'s runbook names the inspector command to run next"
                );
                assert!(
                    tests.contains(&format!("alertname: {name}\n")),
                    "alerts_test.yml tests {name}"
                );
            }
        }
    }
    assert!(alerts.len() >= 5, "{alerts:?}");
}
