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
    let start = Instant::now();
    loop {
        let screen = tmux(&["capture-pane", "-p", "-t", session]);
        if screen.contains(want) {
            return screen;
        }
        assert!(
            start.elapsed() < limit,
            "{want:?} never appeared:\n{screen}"
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
    let screen = wait_for(
        &name,
        "tcp 127.0.0.1:8012  3 members",
        Duration::from_secs(5),
    );
    let bars = screen.lines().filter(|l| l.contains('█')).count();
    assert_eq!(bars, 3, "{screen}");
    // Quit: the process ends cleanly and the normal screen is back.
    tmux(&["send-keys", "-t", &name, "q"]);
    let screen = wait_for(&name, "EXITED rc=0", Duration::from_secs(10));
    assert!(!screen.contains("Bind decisions"), "{screen}");
    assert_eq!(
        tmux(&["display", "-p", "-t", &name, "#{alternate_on}"]).trim(),
        "0"
    );
}
