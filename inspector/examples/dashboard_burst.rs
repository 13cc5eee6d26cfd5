//! Frame time and memory of the dashboard after a burst of 100,000 kernel
//! events: `cargo run --release -p inspector --example dashboard_burst`.
//! Feeds events through the real tracker and model, then draws frames at
//! 160x48 into an in-memory terminal.

use std::time::Instant;

use inspector::{
    dashboard::{
        app::{App, Header, Input},
        ui,
    },
    kernel::TcpState,
    probe::Mode,
    tracker::Tracker,
};
use inspector_common::{AF_INET, Event, IPPROTO_TCP, flag, kind, phase};
use ratatui::{Terminal, backend::TestBackend};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn event(i: u64) -> Event {
    let mut e = Event::zeroed();
    e.ts_ns = 1_000_000_000 + i * 1_000;
    e.family = AF_INET;
    e.proto = IPPROTO_TCP;
    e.netns = 4026531840;
    e.laddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.raddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    e.pid = 1000 + (i % 50) as u32;
    e.comm[..6].copy_from_slice(b"worker");
    e.flags = flag::SYSCALL;
    e.sock = 0xffff_0000_0000 + i;
    e.lport = 8000 + (i % 500) as u16;
    e.rport = 30000 + (i % 20000) as u16;
    match i % 5 {
        0 => {
            e.kind = kind::BIND;
            e.phase = phase::BIND;
            e.req_port = e.lport;
            e.errno = if i.is_multiple_of(7) {
                libc::EADDRINUSE
            } else {
                0
            };
        }
        1 => {
            e.kind = kind::STATE;
            e.old_state = TcpState::ESTABLISHED.raw();
            e.new_state = TcpState::FIN_WAIT1.raw();
        }
        2 => {
            e.kind = kind::TW_ARM;
            e.new_state = TcpState::TIME_WAIT.raw();
            e.sock = 0xeeee_0000_0000 + i;
        }
        3 => {
            e.kind = kind::REUSEPORT;
            e.sock = 0xdddd_0000_0000 + (i % 4);
            e.lport = 9000;
        }
        _ => {
            e.kind = kind::STATE;
            e.old_state = TcpState::FIN_WAIT1.raw();
            e.new_state = TcpState::CLOSE.raw();
        }
    }
    e
}

fn main() {
    let before = rss_kib();
    let header = Header {
        mode: Mode::Tracepoint,
        probes: 7,
        filters: "none".into(),
    };
    let mut app = App::new(header, false);
    let mut tracker = Tracker::new();
    let start = Instant::now();
    let mut out = Vec::new();
    const EVENTS: u64 = 100_000;
    for i in 0..EVENTS {
        tracker.apply(&event(i), &mut out);
        if out.len() >= 1024 {
            app.update(Input::Records(std::mem::take(&mut out)));
        }
    }
    app.update(Input::Records(out));
    let intake = start.elapsed();
    let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("backend");
    let mut times = Vec::new();
    let mut per_pane = Vec::new();
    for pane in ['1', '2', '3', '4'] {
        app.update(Input::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char(pane),
        )));
        let mut pane_ms = 0.0;
        for _ in 0..25 {
            let t = Instant::now();
            terminal.draw(|f| ui::render(&app, f)).expect("draw");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            pane_ms += ms / 25.0;
            times.push(ms);
        }
        per_pane.push(format!("pane {pane} {pane_ms:.2} ms"));
    }
    println!("{}", per_pane.join(", "));
    times.sort_by(f64::total_cmp);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "{EVENTS} events: intake {:.1} ms ({:.2} M events/s); frames at 160x48: mean {mean:.2} ms, \
         p50 {:.2} ms, max {:.2} ms; RSS {} KiB -> {} KiB; tracked: {} decisions, {} sockets, {} TIME_WAIT",
        intake.as_secs_f64() * 1e3,
        EVENTS as f64 / intake.as_secs_f64() / 1e6,
        times[times.len() / 2],
        times[times.len() - 1],
        before,
        rss_kib(),
        app.model.decisions.len(),
        app.model.sockets.len(),
        app.model.time_wait.len(),
    );
}
