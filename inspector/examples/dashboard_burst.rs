//! Frame time and memory of the dashboard after a burst of 100,000 kernel
//! events: `cargo run --release -p inspector --example dashboard_burst`.
//! Feeds events through the real tracker and model, then draws frames at
//! 160x48 into an in-memory terminal. Then the memory bound: 1,000,000
//! events through a fresh tracker and dashboard, 100,000 TIME_WAIT sockets
//! alive at once among them; the peak RSS (VmHWM) must stay under 64 MiB.

use std::time::Instant;

use inspector::{
    commands::dashboard::{
        app::{App, Header, Input},
        ui,
    },
    fixture::EventBuilder,
    kernel::TcpState,
    kernel::probe::Mode,
    model::tracker::Tracker,
};
use inspector_common::{Event, flag, kind};
use ratatui::{Terminal, backend::TestBackend};

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn event(i: u64) -> Event {
    let lport = 8000 + (i % 500) as u16;
    let e = match i % 5 {
        0 => EventBuilder::bind(lport).errno(if i.is_multiple_of(7) {
            libc::EADDRINUSE
        } else {
            0
        }),
        1 => EventBuilder::state(TcpState::ESTABLISHED, TcpState::FIN_WAIT1),
        2 => EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT),
        3 => EventBuilder::new(kind::REUSEPORT),
        _ => EventBuilder::state(TcpState::FIN_WAIT1, TcpState::CLOSE),
    };
    let sock = match i % 5 {
        2 => 0xeeee_0000_0000 + i,
        3 => 0xdddd_0000_0000 + (i % 4),
        _ => 0xffff_0000_0000 + i,
    };
    e.at(1_000_000_000 + i * 1_000)
        .owner(1000 + (i % 50) as u32, "worker")
        .flags(flag::SYSCALL)
        .sock(sock)
        .ports(
            if i % 5 == 3 { 9000 } else { lport },
            30000 + (i % 20000) as u16,
        )
        .build()
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
    drop(app);
    drop(tracker);
    memory_bound(header_of());
}

fn header_of() -> Header {
    Header {
        mode: Mode::Tracepoint,
        probes: 7,
        filters: "none".into(),
    }
}

fn memory_bound(header: Header) {
    const TIME_WAIT: u64 = 100_000;
    const EVENTS: u64 = 1_000_000;
    let before = rss_kib();
    let peak_before = status_kib("VmHWM:");
    let mut app = App::new(header, false);
    let mut tracker = Tracker::new();
    let mut out = Vec::new();
    let start = Instant::now();
    for i in 0..TIME_WAIT {
        let e = EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT)
            .sock(0xcccc_0000_0000 + i)
            .at(1_000_000_000 + i)
            .ports(8000 + (i / 50_000) as u16, 10_000 + (i % 50_000) as u16)
            .build();
        tracker.apply(&e, &mut out);
        if out.len() >= 1024 {
            app.update(Input::Records(std::mem::take(&mut out)));
        }
    }
    // The rest of the events: the mix of `event`, but its timewait
    // entries alternate with exits of the oldest timewait socket, so that
    // exactly TIME_WAIT of them stay alive throughout.
    let mut most = 0;
    for i in TIME_WAIT..EVENTS {
        let k = i / 5;
        let e = if i % 5 == 2 {
            let (kind, sock) = if k.is_multiple_of(2) {
                (kind::TW_ARM, 0xeeee_0000_0000 + k / 2)
            } else if k / 2 < TIME_WAIT {
                (kind::TW_EXPIRE, 0xcccc_0000_0000 + k / 2)
            } else {
                (kind::TW_EXPIRE, 0xeeee_0000_0000 + k / 2 - TIME_WAIT)
            };
            EventBuilder::time_wait(kind, TcpState::TIME_WAIT)
                .sock(sock)
                .at(1_000_000_000 + i * 1_000)
                .ports(8000 + (i % 500) as u16, 30000 + (i % 20000) as u16)
                .build()
        } else {
            event(i)
        };
        tracker.apply(&e, &mut out);
        most = most.max(tracker.time_wait_count());
        if out.len() >= 1024 {
            app.update(Input::Records(std::mem::take(&mut out)));
        }
    }
    app.update(Input::Records(out));
    let s = tracker.stats();
    println!(
        "memory: {EVENTS} events holding {TIME_WAIT} TIME_WAIT in {:.1} s: RSS {} KiB -> {} KiB, \
         peak (VmHWM) {} KiB -> {} KiB (bound {} KiB); tracker: {} timewait (at most {most}), \
         {} evicted; \
         dashboard: {} sockets, {} TIME_WAIT, {} evicted",
        start.elapsed().as_secs_f64(),
        before,
        rss_kib(),
        peak_before,
        status_kib("VmHWM:"),
        64 * 1024,
        tracker.time_wait_count(),
        s.tw_evicted + s.connections_evicted + s.owners_evicted,
        app.model.sockets.len(),
        app.model.time_wait.len(),
        app.model.evicted,
    );
    // The process's peak, the figure the README quotes: what a dashboard
    // reading this stream would have needed at most.
    let peak = status_kib("VmHWM:");
    println!(
        "peak RSS (VmHWM): {peak} KiB, bound {} KiB: {}",
        64 * 1024,
        if peak < 64 * 1024 { "within" } else { "over" }
    );
}
