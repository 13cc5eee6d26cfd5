//! Workers on loopback in a namespace a test creates: SO_REUSEPORT or
//! plain listeners, a forked worker that never accepts, accepting threads
//! and clients.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use inspector::kernel::sys::{BindSpec, Forked, fork_as};
use socket2::{Domain, Socket, Type};

/// Runs `f` on a thread in a fresh network namespace (lo up), giving it
/// the path of that namespace for `--netns`.
pub fn in_netns<T: Send + 'static>(f: impl FnOnce(String) -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        inspector::kernel::netns::enter_new_netns().expect("new netns");
        let me = std::fs::read_link("/proc/thread-self").expect("thread-self");
        f(format!("/proc/{}/ns/net", me.display()))
    })
    .join()
    .expect("namespace thread")
}

pub fn listener(port: u16, reuseport: bool) -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_reuse_port(reuseport).expect("SO_REUSEPORT");
    let a: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    s.bind(&a.into()).expect("bind");
    s.listen(128).expect("listen");
    s
}

/// A listener held by a forked child that never accepts.
pub fn stuck_worker(port: u16, name: &str) -> Forked {
    let spec = BindSpec {
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
        stream: true,
        reuseaddr: false,
        reuseport: true,
        v6only: None,
        listen: Some(128),
        count_on_release: false,
        connect: None,
        comm: Some(std::ffi::CString::new(name).expect("name")),
    };
    let child = fork_as(0, &spec, true).expect("fork");
    assert_eq!(child.report.first_error(), None, "{:?}", child.report);
    child
}

/// Accepts on `s` until `stop`, at most `limit` connections; the accepted
/// sockets (kept open).
pub fn acceptor(s: Socket, stop: Arc<AtomicBool>, limit: usize) -> JoinHandle<Vec<Socket>> {
    s.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut got = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            if got.len() < limit
                && let Ok((c, _)) = s.accept()
            {
                got.push(c);
                continue;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    })
}

pub fn connect(port: u16, n: usize) -> Vec<Socket> {
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    (0..n)
        .map(|_| {
            let c = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
            c.connect_timeout(&to.into(), Duration::from_secs(5))
                .expect("connect");
            c
        })
        .collect()
}
