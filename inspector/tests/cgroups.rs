//! Every record names its cgroup: two child processes in two cgroup v2
//! groups made here, sharing one fresh network namespace. The clients of
//! group B connect to the SO_REUSEPORT listeners of group A and close
//! last, so the records of A's sockets raised in softirq and timer context
//! (reuseport deliveries, TIME_WAIT entries) run while B's task is
//! current: they must still say A.

mod common;

use std::{
    collections::HashSet,
    fs,
    io::Read as _,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::Child,
    sync::mpsc,
    time::Duration,
};

use common::of_type;
use inspector::{
    kernel::cgroup, kernel::netns::in_new_netns, model::filter::Filter, model::record::Record,
};
use serde_json::Value;

const PORT: u16 = 7301;
/// Connections from B to A.
const K: usize = 4;
/// The fake container id of group B (a docker cgroupfs-driver layout).
const CID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00";

/// The two groups under the v2 mount; removed on drop (their members
/// moved back to the root first).
struct Groups {
    mount: PathBuf,
    top: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

impl Groups {
    fn make(mount: &Path) -> std::io::Result<Self> {
        let top = mount.join(format!("inspector-test-{}", std::process::id()));
        let a = top.join("a");
        let b = top.join("docker").join(CID);
        fs::create_dir_all(&a)?;
        fs::create_dir_all(&b)?;
        Ok(Self {
            mount: mount.to_path_buf(),
            top,
            a,
            b,
        })
    }

    fn rel(&self, dir: &Path) -> String {
        format!(
            "/{}",
            dir.strip_prefix(&self.mount)
                .expect("under the mount")
                .display()
        )
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for dir in [&self.a, &self.b] {
            if let Ok(procs) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.lines() {
                    let _ = fs::write(self.mount.join("cgroup.procs"), pid);
                }
            }
        }
        for dir in [
            self.a.clone(),
            self.b.clone(),
            self.top.join("docker"),
            self.top.clone(),
        ] {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A forked child that runs its stages one at a time, each when told.
struct Kid {
    pid: i32,
    /// Closed on drop before reaping: a child still waiting for a stage
    /// then reads EOF and leaves.
    go: Option<OwnedFd>,
    done: OwnedFd,
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: a valid two-int buffer.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    // SAFETY: both descriptors were just returned to us.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Kid {
    /// Forks a child running `body(go, done)`, placed in `group` before it
    /// runs its first stage.
    fn spawn(group: &Path, body: fn(i32, i32) -> !) -> Self {
        let (go_r, go_w) = pipe();
        let (done_r, done_w) = pipe();
        // SAFETY: the child only makes system calls on memory it owns
        // (raw descriptors and stack buffers) and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            body(go_r.as_raw_fd(), done_w.as_raw_fd());
        }
        fs::write(group.join("cgroup.procs"), pid.to_string()).expect("join the cgroup");
        Self {
            pid,
            go: Some(go_w),
            done: done_r,
        }
    }

    /// Runs the next stage and waits (bounded) until it is done.
    fn step(&self) {
        let go = self.go.as_ref().expect("not dropped").as_raw_fd();
        // SAFETY: one byte from a valid buffer to our pipe end.
        let n = unsafe { libc::write(go, [1u8].as_ptr().cast(), 1) };
        assert_eq!(n, 1, "tell the child");
        let mut pfd = libc::pollfd {
            fd: self.done.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, 10_000) };
        assert_eq!(ready, 1, "the child did not finish its stage in 10 s");
        let mut b = [0u8; 1];
        // SAFETY: one byte into a valid buffer.
        let n = unsafe { libc::read(self.done.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        assert_eq!((n, b[0]), (1, 1), "the child's stage failed");
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        drop(self.go.take());
        let mut status = 0;
        // SAFETY: reaping the child we forked; it exits after its stages,
        // or on EOF from the closed `go` pipe.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// In the child: waits for "go", then reports `ok` for the stage.
fn stage(go: i32, done: i32, run: &mut dyn FnMut() -> bool) {
    let mut b = [0u8; 1];
    // SAFETY: one byte into a stack buffer from our pipe end.
    if unsafe { libc::read(go, b.as_mut_ptr().cast(), 1) } != 1 {
        // SAFETY: leaving the forked child without running the parent's
        // exit handlers.
        unsafe { libc::_exit(1) };
    }
    let out = [u8::from(run())];
    // SAFETY: one byte from a stack buffer to our pipe end.
    unsafe { libc::write(done, out.as_ptr().cast(), 1) };
}

fn loopback() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: PORT.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    }
}

const SA_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// Group A: two SO_REUSEPORT listeners; then accepts K connections and
/// closes them first (so A's side goes to TIME_WAIT).
fn server(go: i32, done: i32) -> ! {
    let sa = loopback();
    let mut ls = [-1; 2];
    stage(go, done, &mut || {
        ls.iter_mut().all(|l| {
            let one: libc::c_int = 1;
            // SAFETY: plain socket calls on a descriptor we create, with
            // a valid address and option buffer.
            unsafe {
                *l = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::setsockopt(
                    *l,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEPORT,
                    (&raw const one).cast(),
                    4,
                ) == 0
                    && libc::bind(*l, (&raw const sa).cast(), SA_LEN) == 0
                    && libc::listen(*l, 16) == 0
            }
        })
    });
    stage(go, done, &mut || {
        let mut conns = [-1; K];
        let mut n = 0;
        while n < K {
            let mut pfds = ls.map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            });
            // SAFETY: two valid pollfds.
            if unsafe { libc::poll(pfds.as_mut_ptr(), 2, 5_000) } <= 0 {
                return false;
            }
            for p in pfds {
                if p.revents & libc::POLLIN != 0 && n < K {
                    // SAFETY: accept on our listener, no address wanted.
                    let c =
                        unsafe { libc::accept(p.fd, std::ptr::null_mut(), std::ptr::null_mut()) };
                    if c >= 0 {
                        conns[n] = c;
                        n += 1;
                    }
                }
            }
        }
        for c in conns {
            // SAFETY: closing descriptors we accepted.
            unsafe { libc::close(c) };
        }
        true
    });
    // Keep the listeners until told to go (or the parent is gone).
    stage(go, done, &mut || true);
    // SAFETY: leaving the forked child.
    unsafe { libc::_exit(0) }
}

/// Group B: K connections to A; then closes them after A did.
fn client(go: i32, done: i32) -> ! {
    let sa = loopback();
    let mut cs = [-1; K];
    stage(go, done, &mut || {
        cs.iter_mut().all(|c| {
            // SAFETY: a socket we create, connected to a valid address.
            unsafe {
                *c = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::connect(*c, (&raw const sa).cast(), SA_LEN) == 0
            }
        })
    });
    stage(go, done, &mut || {
        for c in cs {
            // SAFETY: closing our own sockets.
            unsafe { libc::close(c) };
        }
        true
    });
    // SAFETY: leaving the forked child.
    unsafe { libc::_exit(0) }
}

/// Starts `inspector trace --json ARGS` and waits until it attached.
fn start(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    // Each connection's accept and state changes too, so every kind of
    // record is there to carry its cgroup.
    let mut all = vec!["trace", "--json", "--connections"];
    all.extend_from_slice(args);
    common::start(&all).expect("the probes attach")
}

/// Stops it with SIGTERM; its records (without the `stats` ones).
fn stop(mut child: Child) -> Vec<Value> {
    // SAFETY: kill on a pid we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}");
    out.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .filter(|v| v["type"] != "stats")
        .collect()
}

#[test]
fn every_record_names_the_cgroup_of_its_socket() {
    let Some(mut p) = common::pipeline(Filter::default()) else {
        return;
    };
    let no_reuseport = common::reuseport_hook_missing(&p);
    let mount = cgroup::v2_mount().expect("a cgroup v2 mount");
    let groups = Groups::make(&mount).expect("create test cgroups");
    let (ga, gb) = (groups.rel(&groups.a), groups.rel(&groups.b));
    let (a, b) = (groups.a.clone(), groups.b.clone());
    let ga_arg = ga.clone();
    let (netns, by_cgroup, by_container) = in_new_netns(move |netns| {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let path = format!("/proc/{}/task/{tid}/ns/net", std::process::id());
        let by_cgroup = start(&["--cgroup", &ga_arg, "--netns", &path]);
        let by_container = start(&["--container", &CID[..12], "--netns", &path]);
        let server = Kid::spawn(&a, server);
        let client = Kid::spawn(&b, client);
        server.step(); // listen
        client.step(); // connect
        server.step(); // accept and close first
        client.step(); // close: A's side enters TIME_WAIT
        std::thread::sleep(Duration::from_millis(300));
        server.step(); // release the listeners
        drop((server, client));
        (netns, by_cgroup, by_container)
    })
    .expect("netns");

    let want_tw = K;
    let records = common::collect(&mut p, netns, Duration::from_secs(10), |all| {
        of_type(all, "tw_enter").len() >= want_tw
            && (no_reuseport || of_type(all, "reuseport").len() >= K)
    });
    drop(groups);

    let ours = |r: &Record| r.lport == PORT || r.rport == PORT;
    let in_a = |r: &Record| r.cgroup.as_deref() == Some(ga.as_str());
    let in_b = |r: &Record| r.cgroup.as_deref() == Some(gb.as_str());
    let count = |t: &str, f: &dyn Fn(&Record) -> bool| {
        of_type(&records, t).into_iter().filter(|r| f(r)).count()
    };
    for r in records.iter().filter(|r| ours(r)) {
        assert!(in_a(r) || in_b(r), "no test cgroup: {r:#?}");
        // The listeners and A's accepted connections are A's; B's client
        // sockets (remote port PORT) are B's.
        let a_side = r.lport == PORT;
        assert_eq!(in_a(r), a_side, "wrong cgroup: {r:#?}");
        if in_b(r) {
            assert_eq!(r.container.as_deref(), Some(CID), "{r:#?}");
        } else {
            assert_eq!(r.container, None, "{r:#?}");
        }
    }
    assert_eq!(count("bind", &in_a), 4, "two binds, two listens");
    assert_eq!(count("connect", &in_b), K);
    assert_eq!(count("accept", &in_a), K);
    // Raised in B's connect and close (softirq on loopback): still A's.
    assert_eq!(count("tw_enter", &in_a), K, "TIME_WAIT on A's side");
    if !no_reuseport {
        assert_eq!(count("reuseport", &in_a), K);
    }

    // The real binary: `--cgroup A` shows group A only, `--container`
    // group B only.
    let only_a = stop(by_cgroup.0);
    let only_b = stop(by_container.0);
    assert!(only_a.len() >= 4 + 2 * K, "{only_a:#?}");
    let types: HashSet<&str> = only_a.iter().filter_map(|r| r["type"].as_str()).collect();
    for t in ["bind", "accept", "state", "tw_enter"] {
        assert!(types.contains(t), "{t} missing: {types:?}");
    }
    for r in &only_a {
        assert_eq!(r["cgroup"], ga.as_str(), "{r}");
        assert_eq!(r["container"], Value::Null, "{r}");
    }
    assert!(only_b.iter().any(|r| r["type"] == "connect"), "{only_b:#?}");
    for r in &only_b {
        assert_eq!(r["cgroup"], gb.as_str(), "{r}");
        assert_eq!(r["container"], CID, "{r}");
    }
    if let Some(line) = only_b.iter().find(|r| r["type"] == "connect") {
        eprintln!("example: {line}");
    }
}
