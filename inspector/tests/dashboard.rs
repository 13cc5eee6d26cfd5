//! The real dashboard in a real terminal (tmux), driven by keys as a person
//! would: start a scenario, see its failed bind and its reuseport bars, quit,
//! and find the terminal back in its normal screen.

use std::{
    process::Command,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_inspector");

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Session(String);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .output();
    }
}

/// Polls the pane until `want` appears in it, or fails after `limit`.
fn wait_for(session: &str, want: &str, limit: Duration) -> String {
    wait_until(session, want, limit, |screen| screen.contains(want))
}

/// Polls the pane until `done` holds for it, or fails after `limit` naming
/// `what`. tmux may show a frame while it is still being written, so a test
/// that counts or reads several lines waits for all of them here.
fn wait_until(session: &str, what: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if done(&screen) {
            return screen;
        }
        assert!(
            start.elapsed() < limit,
            "{what:?} never appeared:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_scenario_started_from_the_dashboard_shows_its_failure_and_bars() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let has_tmux = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && has_tmux) {
        assert!(!ci, "CI=true needs root and tmux for the dashboard test");
        eprintln!("SKIPPED: needs root (eBPF) and tmux");
        return;
    }
    let name = format!("inspector-test-{}", std::process::id());
    let _session = Session(name.clone());
    let cmd = format!("sh -c '{BIN}; echo EXITED rc=$?; sleep 60'");
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "120",
        "-y",
        "40",
        &cmd,
    ]);
    wait_for(&name, "Bind decisions", Duration::from_secs(30));
    // Scenarios pane, down to 11 (tcp-reuseport-distribution), run it.
    tmux(&["send-keys", "-t", &name, "4"]);
    for _ in 0..10 {
        tmux(&["send-keys", "-t", &name, "j"]);
    }
    tmux(&["send-keys", "-t", &name, "Enter"]);
    let screen = wait_for(&name, "evidence agrees", Duration::from_secs(60));
    assert!(screen.contains("11 tcp-reuseport-distribution"), "{screen}");
    assert!(
        screen.contains("REFUTED") || screen.contains("CONFIRMED") || screen.contains("PARTLY"),
        "{screen}"
    );
    // Its failed bind: the worker without SO_REUSEPORT.
    tmux(&["send-keys", "-t", &name, "1"]);
    tmux(&["send-keys", "-t", &name, "f"]);
    let screen = wait_for(&name, "failures only", Duration::from_secs(5));
    assert!(screen.contains("(1 shown"), "{screen}");
    let row = screen
        .lines()
        .find(|l| l.contains("bind     EADDRINUSE"))
        .unwrap_or_default();
    assert!(
        row.contains("127.0.0.1:8012") && row.contains("scenario-11"),
        "{screen}"
    );
    assert!(screen.contains("1 failed"), "{screen}");
    // Its reuseport bars: one group of three members.
    tmux(&["send-keys", "-t", &name, "3"]);
    wait_until(
        &name,
        "tcp 127.0.0.1:8012  3 members, with a bar for each",
        Duration::from_secs(5),
        |screen| {
            screen.contains("tcp 127.0.0.1:8012  3 members")
                && screen.lines().filter(|l| l.contains('█')).count() == 3
        },
    );
    // Quit: the process ends cleanly and the normal screen is back.
    tmux(&["send-keys", "-t", &name, "q"]);
    let screen = wait_for(&name, "EXITED rc=0", Duration::from_secs(10));
    assert!(!screen.contains("Bind decisions"), "{screen}");
    assert_eq!(
        tmux(&["display", "-p", "-t", &name, "#{alternate_on}"]).trim(),
        "0"
    );
}

/// Root and tmux, or a skip (a failure under CI).
fn can_run() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let has_tmux = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && has_tmux) {
        assert!(!ci, "CI=true needs root and tmux for the dashboard test");
        eprintln!("SKIPPED: needs root (eBPF) and tmux");
    }
    root && has_tmux
}

#[test]
fn enter_on_a_failed_bind_shows_the_whole_explanation_and_the_holders() {
    if !can_run() {
        return;
    }
    let name = format!("inspector-detail-{}", std::process::id());
    let _session = Session(name.clone());
    let cmd = format!("sh -c '{BIN}; echo EXITED rc=$?; sleep 60'");
    // The size a new user's terminal has.
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &name,
        "-x",
        "80",
        "-y",
        "24",
        &cmd,
    ]);
    wait_for(&name, "Bind decisions", Duration::from_secs(30));
    // Scenario 4: a second SO_REUSEADDR bind while the first listens fails.
    tmux(&["send-keys", "-t", &name, "4"]);
    for _ in 0..3 {
        tmux(&["send-keys", "-t", &name, "j"]);
    }
    tmux(&["send-keys", "-t", &name, "Enter"]);
    wait_for(&name, "evidence", Duration::from_secs(60));
    // Pane 1: the failure is pinned on top and selected; Enter opens it.
    tmux(&["send-keys", "-t", &name, "1"]);
    wait_for(
        &name,
        "Failures, last 5 min: EADDRINUSE",
        Duration::from_secs(5),
    );
    tmux(&["send-keys", "-t", &name, "Enter"]);
    wait_for(&name, "when it failed", Duration::from_secs(5));
    // The frame whole: tmux may show one while it is still being written.
    let screen = wait_for(&name, "scenario-4  ", Duration::from_secs(5));
    assert!(screen.contains("Decision: tcp bind()"), "{screen}");
    assert!(screen.contains("-> EADDRINUSE"), "{screen}");
    // The explanation, whole, when the annotator reached the holder before
    // the scenario closed it: the rule and the holder. Otherwise it says
    // which was gone.
    if !screen.contains("no explanation") && !screen.contains("has gone since") {
        assert!(screen.contains("inet_csk_get_port"), "{screen}");
        assert!(screen.contains("held by LISTEN"), "{screen}");
    }
    // The holders table: its header and the listener with its owner.
    assert!(
        screen.contains("STATE") && screen.contains("OWNER (WAS)"),
        "{screen}"
    );
    let listener = screen
        .lines()
        .find(|l| l.trim_start().starts_with("LISTEN "))
        .unwrap_or_default();
    assert!(listener.contains("scenario-4"), "{screen}");
    println!("{screen}");
    // Esc goes back to the list.
    tmux(&["send-keys", "-t", &name, "Escape"]);
    wait_for(&name, "Failures, last 5 min", Duration::from_secs(5));
    // A failure whose holder stays while we look: the explanation is
    // computed from the live socket and shown whole.
    tmux(&["send-keys", "-t", &name, "a"]);
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = holder.local_addr().expect("address").port();
    let second = std::net::TcpListener::bind(("127.0.0.1", port));
    assert!(second.is_err(), "the second bind fails");
    wait_for(&name, "EADDRINUSE x2", Duration::from_secs(5));
    tmux(&["send-keys", "-t", &name, "g"]);
    tmux(&["send-keys", "-t", &name, "Enter"]);
    let holder_line = format!("held by LISTEN 127.0.0.1:{port}");
    let screen = wait_until(
        &name,
        "the holders and the explanation",
        Duration::from_secs(5),
        |screen| screen.contains("Holders of tcp port") && screen.contains(&holder_line),
    );
    assert!(
        screen.contains(&format!("127.0.0.1:{port} -> EADDRINUSE")),
        "{screen}"
    );
    // The rule, the holder and the advice, each on its line.
    assert!(screen.contains("inet_bind_conflict"), "{screen}");
    assert!(screen.contains("SO_REUSEPORT"), "{screen}");
    assert!(
        screen.contains(&format!("held by LISTEN 127.0.0.1:{port}")),
        "{screen}"
    );
    println!("{screen}");
    drop(holder);
    tmux(&["send-keys", "-t", &name, "q"]);
    wait_for(&name, "EXITED rc=0", Duration::from_secs(10));
}
