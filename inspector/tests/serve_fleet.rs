//! `inspector serve` on a node: the per-namespace gauges read every network
//! namespace, not only the agent's (a `hostNetwork` DaemonSet's agent sits
//! in the node's), and a failure inside a Kubernetes pod's cgroup is
//! labelled with the pod's namespace, name and container from the kubelet's
//! log directories.

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    TempDir, addr, errno_of, needs_root,
    serve::{ci, get, start_serve_with},
    tcp,
};
use inspector::kernel::netns::{self, NetnsError};

/// Scrapes (text format) until `done` holds, for at most 60 s; the last
/// body.
fn scrape_until(port: u16, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(b) = get(port, "/metrics", "text/plain") {
            if done(&b) {
                return b;
            }
            last = b;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    last
}

/// A namespace made as `ip netns add NAME` makes it, deleted when dropped.
struct Named(String);

impl Named {
    fn add(name: String) -> Option<Self> {
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(!ci(), "CI=true and `ip netns add` failed");
            eprintln!("SKIPPED: `ip netns add` failed (iproute2 missing?)");
            return None;
        }
        Some(Self(name))
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[derive(Debug)]
struct Failed(String);

impl From<NetnsError> for Failed {
    fn from(e: NetnsError) -> Self {
        Self(e.to_string())
    }
}

const RANGE: (u16, u16) = (40_000, 40_003);
const DEST: u16 = 7031;

/// In the namespace at `path`: a 4-port range, a loopback listener and
/// four connections to it, the first of them closed into TIME_WAIT; a
/// fifth connect() finds no port. The sockets, to keep open.
fn exhaust(path: &Path) -> Result<Vec<socket2::Socket>, Failed> {
    netns::in_netns(Some(path), || {
        let io = |e: std::io::Error| Failed(e.to_string());
        netns::set_link_flags("lo", libc::IFF_UP).map_err(io)?;
        netns::set_sysctl(
            "net/ipv4/ip_local_port_range",
            &format!("{} {}", RANGE.0, RANGE.1),
        )
        .map_err(io)?;
        let target = addr(&format!("127.0.0.1:{DEST}"));
        let listener = tcp();
        listener.bind(&target).map_err(io)?;
        listener.listen(16).map_err(io)?;
        let mut open = vec![];
        for _ in RANGE.0..=RANGE.1 {
            let c = tcp();
            c.connect(&target).map_err(io)?;
            open.push(c);
        }
        let fifth = tcp();
        assert_eq!(
            errno_of(fifth.connect(&target)),
            Some(libc::EADDRNOTAVAIL),
            "four ports, four connections: the fifth has none"
        );
        // The client closes first, then its peer: the client's side (and
        // its port) goes to TIME_WAIT.
        let (first, _) = listener.accept().map_err(io)?;
        let client = open.remove(0);
        client.shutdown(std::net::Shutdown::Write).map_err(io)?;
        std::thread::sleep(Duration::from_millis(50));
        drop(first);
        std::thread::sleep(Duration::from_millis(50));
        drop(client);
        open.push(listener);
        Ok(open)
    })
}

/// A fresh named namespace whose 4-port range is used up toward a
/// loopback listener shows on a default `serve` (no --netns), under its
/// name: ports in use, the range's size, its TIME_WAIT socket.
#[test]
fn a_namespace_with_exhausted_ports_shows_without_netns() {
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let Some(ns) = Named::add(format!("inspector-fleet-{}", std::process::id())) else {
        return;
    };
    let open = exhaust(&ns.path()).unwrap_or_else(|e| panic!("the namespace's workload: {}", e.0));
    let Some((mut serve, port)) = start_serve_with(&[]) else {
        return;
    };
    let name = &ns.0;
    let in_use = format!(
        "inspector_ephemeral_ports_in_use{{netns=\"{name}\",destination=\"127.0.0.1:{DEST}\"}} 4"
    );
    let size = format!("inspector_ephemeral_port_range_size{{netns=\"{name}\"}} 4");
    let tw = format!("inspector_timewait_sockets{{netns=\"{name}\",proto=\"tcp\",port=\"4000");
    let text = scrape_until(port, |b| {
        b.lines().any(|l| l == in_use)
            && b.lines().any(|l| l == size)
            && b.lines().any(|l| l.starts_with(&tw) && l.ends_with(" 1"))
    });
    assert!(text.lines().any(|l| l == in_use), "{in_use}\n{text}");
    assert!(text.lines().any(|l| l == size), "{size}\n{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&tw) && l.ends_with(" 1")),
        "{tw}...\n{text}"
    );
    let watched = text
        .lines()
        .find_map(|l| l.strip_prefix("inspector_netns_watched "))
        .and_then(|n| n.parse::<u32>().ok());
    assert!(watched.is_some_and(|n| n >= 2), "{text}");
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
    drop(open);
}

/// A namespace held only by a thread (no name, no process of its own) is
/// found through the thread its events name, and read under its inode.
#[test]
fn a_namespace_seen_only_in_events_is_read() {
    const N: usize = 3;
    const TO: u16 = 7033;
    if !needs_root("load eBPF programs and create network namespaces") {
        return;
    }
    let Some((mut serve, port)) = start_serve_with(&[]) else {
        return;
    };
    // Connections made after the agent started: their events name the
    // thread, the way into the namespace.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (end, end_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        netns::enter_new_netns().expect("netns");
        let ino = netns::current_netns().expect("netns inode");
        let target = addr(&format!("127.0.0.1:{TO}"));
        let listener = tcp();
        listener.bind(&target).expect("bind");
        listener.listen(16).expect("listen");
        let open: Vec<_> = (0..N)
            .map(|_| {
                let c = tcp();
                c.connect(&target).expect("connect");
                c
            })
            .collect();
        ready_tx.send(ino).expect("send");
        let _ = end_rx.recv_timeout(Duration::from_secs(120));
        drop((open, listener));
    });
    let ino = ready.recv().expect("namespace ready");
    let want = format!(
        "inspector_ephemeral_ports_in_use{{netns=\"{ino}\",destination=\"127.0.0.1:{TO}\"}} {N}"
    );
    let text = scrape_until(port, |b| b.lines().any(|l| l == want));
    let _ = end.send(());
    worker.join().expect("namespace thread");
    assert!(text.lines().any(|l| l == want), "{want}\n{text}");
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
}

const UID: &str = "0e1a6c52-7a5d-4c1b-9e6f-1d2c3b4a5f60";
const CID: &str = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee11";
const BIND_PORT: u16 = 7032;

/// A kubelet-and-containerd cgroup made under the v2 mount, with this
/// process moved in while it lives; on drop the process goes back and the
/// directories this test made are removed.
struct PodCgroup {
    /// The directories made, outermost first.
    made: Vec<PathBuf>,
    leaf: PathBuf,
    /// This process's own cgroup before the move.
    home: PathBuf,
}

impl PodCgroup {
    fn make(mount: &Path) -> std::io::Result<Self> {
        let own = fs::read_to_string("/proc/self/cgroup")?;
        let rel = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("/")
            .trim_start_matches('/')
            .to_owned();
        let uid = UID.replace('-', "_");
        let leaf = mount
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!("kubepods-besteffort-pod{uid}.slice"))
            .join(format!("cri-containerd-{CID}.scope"));
        let mut made = vec![];
        let mut dir = mount.to_path_buf();
        for part in leaf.strip_prefix(mount).expect("under the mount") {
            dir.push(part);
            if !dir.exists() {
                fs::create_dir(&dir)?;
                made.push(dir.clone());
            }
        }
        Ok(Self {
            made,
            leaf,
            home: mount.join(rel),
        })
    }

    fn enter(&self) -> std::io::Result<()> {
        fs::write(self.leaf.join("cgroup.procs"), "0")
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.home.join("cgroup.procs"), "0");
        for dir in self.made.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A fake kubelet tree: pod `shop/web-0` with containers `app` and
/// `sidecar`, and the /var/log/containers link that says which container
/// id is `app`.
fn kubelet_tree(root: &Path) -> PathBuf {
    let pods = root.join("pods");
    let pod = pods.join(format!("shop_web-0_{UID}"));
    for c in ["app", "sidecar"] {
        fs::create_dir_all(pod.join(c)).expect("pod dir");
        fs::write(pod.join(c).join("0.log"), "").expect("log");
    }
    fs::create_dir_all(root.join("containers")).expect("containers dir");
    std::os::unix::fs::symlink(
        pod.join("app/0.log"),
        root.join(format!("containers/web-0_shop_app-{CID}.log")),
    )
    .expect("link");
    pods
}

/// A bind that fails in a process inside a pod's cgroup is counted with
/// the pod's namespace, name and container; a named namespace (as CNI
/// names a pod's) with a process of the pod in it carries the pod on its
/// gauges.
#[test]
fn a_bind_failure_in_a_pod_carries_its_pod_labels() {
    if !needs_root("load eBPF programs and create cgroups") {
        return;
    }
    let Some(mount) = inspector::kernel::cgroup::v2_mount() else {
        assert!(!ci(), "CI=true and no cgroup v2 mount");
        eprintln!("SKIPPED: no cgroup v2 mount");
        return;
    };
    let dir = TempDir::new("fleet-pods");
    let pods = kubelet_tree(&dir.0);
    let pods_arg = pods.to_string_lossy().into_owned();
    // Started before the move: the agent stays in its own cgroup.
    let Some((mut serve, port)) = start_serve_with(&["--pods-dir", &pods_arg]) else {
        return;
    };
    let Some(ns) = Named::add(format!("inspector-fleet-pod-{}", std::process::id())) else {
        return;
    };
    let cgroup = PodCgroup::make(&mount).expect("the pod's cgroup");
    cgroup.enter().expect("move into the pod's cgroup");
    // The pod's sandbox: a process in the pod's cgroup and namespace.
    let sandbox = Command::new("ip")
        .args(["netns", "exec", &ns.0, "sleep", "120"])
        .spawn()
        .map(common::serve::Running)
        .expect("a process in the namespace");
    let failed = netns::in_new_netns(|_| {
        let target = addr(&format!("127.0.0.1:{BIND_PORT}"));
        let holder = tcp();
        holder.bind(&target).expect("bind");
        holder.listen(4).expect("listen");
        errno_of(tcp().bind(&target))
    })
    .expect("netns");
    assert_eq!(failed, Some(libc::EADDRINUSE));
    let want = format!(
        "inspector_bind_failures_total{{proto=\"tcp\",port=\"{BIND_PORT}\",errno=\"EADDRINUSE\",namespace=\"shop\",pod=\"web-0\",container=\"app\"}} 1"
    );
    let range = format!(
        "inspector_ephemeral_port_range_size{{netns=\"{}\",namespace=\"shop\",pod=\"web-0\",container=\"\"}}",
        ns.0
    );
    // The cgroup lives until the agent has resolved it.
    let text = scrape_until(port, |b| {
        b.lines().any(|l| l == want) && b.lines().any(|l| l.starts_with(&range))
    });
    drop(sandbox);
    drop(cgroup);
    assert!(text.lines().any(|l| l == want), "{want}\n{text}");
    assert!(
        text.lines().any(|l| l.starts_with(&range)),
        "{range}\n{text}"
    );
    assert!(serve.stop(), "inspector serve exits cleanly on SIGTERM");
}
