//! User-space capacity: raw ring-buffer bytes decoded, attributed by the
//! tracker and applied to the dashboard model; and a dashboard frame with
//! 10,000 tracked sockets. `cargo bench -p inspector --bench pipeline`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use inspector::{
    commands::dashboard::{
        app::{App, Header, Input},
        model::Model,
        ui,
    },
    fixture::EventBuilder,
    kernel::TcpState,
    kernel::probe::{Mode, decode},
    model::record::Record,
    model::tracker::Tracker,
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

/// Decodes and attributes `raw` with a new tracker, handing the records
/// to `batch` 1024 at a time, as the pipeline reads the ring.
fn track(raw: &[Vec<u8>], mut batch: impl FnMut(&mut Vec<Record>)) {
    let mut tracker = Tracker::new();
    let mut out = Vec::with_capacity(1024);
    for bytes in raw {
        if let Some(ev) = decode(bytes) {
            tracker.apply(&ev, &mut out);
        }
        if out.len() >= 1024 {
            batch(&mut out);
            out.clear();
        }
    }
}

fn capacity(c: &mut Criterion) {
    const N: u64 = 100_000;
    let raw = events(N, 10_000);
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(N));
    g.sample_size(20);
    g.bench_function("decode+track", |b| {
        b.iter(|| {
            track(&raw, |out| {
                black_box(out);
            });
        });
    });
    // `trace --json`'s user-space path: every record written as its line.
    g.bench_function("decode+track+ndjson", |b| {
        let mut lines = Vec::with_capacity(1 << 20);
        b.iter(|| {
            track(&raw, |out| {
                for r in out.iter() {
                    inspector::output::ndjson::write(r, &mut lines);
                }
                black_box(&lines);
                lines.clear();
            });
        });
    });
    g.bench_function("decode+track+model", |b| {
        b.iter(|| {
            let mut model = Model::new();
            track(&raw, |out| {
                for r in out.iter() {
                    model.apply(r);
                }
            });
            black_box(&model);
        });
    });
    g.finish();
}

/// The unkeyed rotate-xor-multiply fold the maps used before keyed
/// hashing, kept here as the speed to match.
#[derive(Default)]
struct OldFold(u64);

impl std::hash::Hasher for OldFold {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_u16(&mut self, i: u16) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// The tracker's hot map work under each candidate hasher: 4-tuple keys
/// (IPv4 and IPv6 remote peers) and socket addresses, inserted, looked up
/// and removed as connections come and go.
fn hashers(c: &mut Criterion) {
    use std::{
        collections::HashMap,
        hash::{BuildHasher, BuildHasherDefault},
        net::IpAddr,
    };
    type Tuple = (u32, IpAddr, u16, IpAddr, u16);
    const N: usize = 100_000;
    let tuples: Vec<Tuple> = (0..N as u32)
        .map(|i| {
            let raddr = if i % 2 == 0 {
                IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8])
            } else {
                IpAddr::V6(std::net::Ipv6Addr::from(
                    (0x2001_0db8u128 << 96) | u128::from(i.wrapping_mul(2_654_435_761)),
                ))
            };
            (
                4_026_531_840,
                IpAddr::from([127, 0, 0, 1]),
                8000 + (i % 500) as u16,
                raddr,
                (30_000 + i % 30_000) as u16,
            )
        })
        .collect();
    let socks: Vec<u64> = (0..N as u64)
        .map(|i| 0xffff_8881_0000_0000 + i * 0x40)
        .collect();
    fn run<S: BuildHasher + Clone>(s: &S, tuples: &[Tuple], socks: &[u64]) -> usize {
        let mut conns: HashMap<Tuple, u32, S> = HashMap::with_hasher(s.clone());
        let mut owners: HashMap<u64, u32, S> = HashMap::with_hasher(s.clone());
        let mut hits = 0;
        for (i, (t, k)) in tuples.iter().zip(socks).enumerate() {
            conns.insert(*t, i as u32);
            owners.insert(*k, i as u32);
            hits += usize::from(conns.contains_key(&tuples[i / 2]));
            hits += usize::from(owners.contains_key(&socks[i / 2]));
            if i % 4 == 3 {
                conns.remove(&tuples[i - 3]);
                owners.remove(&socks[i - 3]);
            }
        }
        hits
    }
    let mut g = c.benchmark_group("hasher");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(20);
    g.bench_function("old fold (unkeyed)", |b| {
        let s = BuildHasherDefault::<OldFold>::default();
        b.iter(|| black_box(run(&s, &tuples, &socks)));
    });
    g.bench_function("std SipHash-1-3", |b| {
        let s = std::collections::hash_map::RandomState::new();
        b.iter(|| black_box(run(&s, &tuples, &socks)));
    });
    g.bench_function("ahash 0.8", |b| {
        let s = ahash::RandomState::new();
        b.iter(|| black_box(run(&s, &tuples, &socks)));
    });
    g.bench_function("foldhash 0.2 fast, seeded", |b| {
        let s = foldhash::fast::RandomState::default();
        b.iter(|| black_box(run(&s, &tuples, &socks)));
    });
    g.bench_function("foldhash 0.2 quality, seeded (chosen)", |b| {
        let s = inspector::util::fasthash::KeyedState::default();
        b.iter(|| black_box(run(&s, &tuples, &socks)));
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

criterion_group!(benches, hashers, capacity, frame);
criterion_main!(benches);
