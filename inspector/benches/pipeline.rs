//! User-space capacity: raw ring-buffer bytes decoded, attributed by the
//! tracker and applied to the dashboard model; and a dashboard frame with
//! 10,000 tracked sockets. `cargo bench -p inspector --bench pipeline`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inspector::{
    dashboard::{
        app::{App, Header, Input},
        model::Model,
        ui,
    },
    fixture::EventBuilder,
    kernel::TcpState,
    probe::{Mode, decode},
    tracker::Tracker,
};
use inspector_common::{flag, kind};
use ratatui::{Terminal, backend::TestBackend};

/// A realistic mix: binds (some failing), state changes of a connection's
/// life, TIME_WAIT entries and reuseport deliveries, over 500 ports.
fn events(n: u64, socks: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let lport = 8000 + (i % 500) as u16;
            let base = |b: EventBuilder| {
                b.at(1_000_000_000 + i * 1_000)
                    .owner(1000 + (i % 50) as u32, "worker")
                    .sock(0xffff_0000_0000 + (i % socks))
                    .ports(lport, 30000 + (i % 20_000) as u16)
            };
            let tw_sock = 0xeeee_0000_0000;
            let e = match i % 8 {
                0 => base(EventBuilder::bind(lport)).errno(if i % 7 == 0 {
                    libc::EADDRINUSE
                } else {
                    0
                }),
                1..=4 => base(EventBuilder::state(
                    TcpState::from((i % 8) as u8),
                    TcpState::from((i % 8) as u8 + 1),
                ))
                .flags(flag::OWNER_KNOWN),
                5 => base(EventBuilder::time_wait(kind::TW_ARM, TcpState::TIME_WAIT))
                    .sock(tw_sock + (i % socks))
                    .flags(flag::OWNER_KNOWN),
                6 => base(EventBuilder::new(kind::REUSEPORT))
                    .sock(0xdddd_0000_0000 + (i % 4))
                    .lport(9000)
                    .flags(flag::OWNER_KNOWN),
                _ => base(EventBuilder::time_wait(
                    kind::TW_EXPIRE,
                    TcpState::TIME_WAIT,
                ))
                .sock(tw_sock + ((i - 2) % socks))
                .flags(flag::OWNER_KNOWN),
            };
            e.bytes()
        })
        .collect()
}

fn capacity(c: &mut Criterion) {
    const N: u64 = 100_000;
    let raw = events(N, 10_000);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("decode+track", |b| {
        b.iter(|| {
            let mut tracker = Tracker::new();
            let mut out = Vec::with_capacity(1024);
            for bytes in &raw {
                if let Some(ev) = decode(bytes) {
                    tracker.apply(&ev, &mut out);
                }
                if out.len() >= 1024 {
                    black_box(&out);
                    out.clear();
                }
            }
        });
    });
    g.bench_function("decode+track+model", |b| {
        b.iter(|| {
            let mut tracker = Tracker::new();
            let mut model = Model::new();
            let mut out = Vec::with_capacity(1024);
            for bytes in &raw {
                if let Some(ev) = decode(bytes) {
                    tracker.apply(&ev, &mut out);
                }
                if out.len() >= 1024 {
                    for r in &out {
                        model.apply(r);
                    }
                    out.clear();
                }
            }
            black_box(&model);
        });
    });
    g.finish();
}

fn frame(c: &mut Criterion) {
    let header = Header {
        mode: Mode::Tracepoint,
        probes: 7,
        filters: "none".into(),
    };
    let mut app = App::new(header, false);
    let mut tracker = Tracker::new();
    let mut out = Vec::new();
    // Enough distinct sockets that 10,000+ are tracked when drawing.
    for bytes in events(160_000, 40_000) {
        if let Some(ev) = decode(&bytes) {
            tracker.apply(&ev, &mut out);
        }
    }
    app.update(Input::Records(out));
    let mut g = c.benchmark_group("dashboard frame 160x48");
    for pane in ['1', '2', '3', '4'] {
        app.update(Input::Key(crossterm::event::KeyEvent::from(
            crossterm::event::KeyCode::Char(pane),
        )));
        let mut terminal = Terminal::new(TestBackend::new(160, 48)).expect("backend");
        g.bench_function(
            format!(
                "pane {pane} ({} sockets)",
                app.model.sockets.len() + app.model.time_wait.len()
            ),
            |b| {
                b.iter(|| terminal.draw(|f| ui::render(&app, f)).map(|_| ()));
            },
        );
    }
    g.finish();
}

criterion_group!(benches, capacity, frame);
criterion_main!(benches);
