//! The artifacts of `cargo xtask dist`, tried where a fleet would run
//! them (run as root by `cargo xtask test`, or `cargo xtask dist-test`):
//!
//! - the static binary in a Debian 11 (bullseye, glibc 2.31) root made by
//!   debootstrap and kept in `target/dist-test/`, sharing this kernel:
//!   `--version`, `trace --duration 2` seeing a failed bind, `explain` of a
//!   port held outside the root;
//! - the .deb: `dpkg -i` in that root, its files, `systemd-analyze verify`
//!   of the unit it installed, `dpkg --purge`;
//! - the image: run by podman with the DaemonSet's security context (its
//!   capabilities, host network and PIDs, read-only root, its volumes and
//!   memory limit, the runtime's default seccomp profile) and the
//!   DaemonSet's arguments; `serve` in it must report, with its
//!   explanation, a failed bind made in a network namespace of its own,
//!   attach every hook, and warn of nothing that full root does not also
//!   get.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use yaml_rust2::{Yaml, YamlLoader};

use crate::{
    dist::{Artifacts, VersionInfo, private_dir},
    root, run_cmd, setup, show,
};

/// Debian packages the checks use.
pub const TOOLS: &[&str] = &["debootstrap", "podman", "runc", "curl", "iproute2"];

const SUITE: &str = "bullseye";
const MIRROR: &str = "http://deb.debian.org/debian";
/// Marks a finished root: an interrupted debootstrap leaves none.
const READY: &str = ".inspector-root-ready";
/// Where the static binary is copied inside the root.
const IN_ROOT_BIN: &str = "/opt/inspector-dist/inspector";

/// The bullseye root, made once (about 40 s and 40 MB from the mirror)
/// and kept under `target/` for later runs.
pub fn bullseye_root() -> Result<PathBuf> {
    let dir = root().join("target/dist-test");
    private_dir(&dir)?;
    let rootfs = dir.join(SUITE);
    if rootfs.join(READY).exists() {
        return Ok(rootfs);
    }
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs)
            .with_context(|| format!("removing the unfinished root {}", rootfs.display()))?;
    }
    let log = dir.join("debootstrap.log");
    let start = Instant::now();
    let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let status = Command::new("debootstrap")
        .args(["--variant=minbase", SUITE])
        .arg(&rootfs)
        .arg(MIRROR)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("cannot run debootstrap (apt-get install debootstrap)")?;
    if !status.success() {
        let text = fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        bail!(
            "debootstrap of Debian {SUITE} from {MIRROR} failed ({status}); the end of {}:\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    fs::write(rootfs.join(READY), b"")?;
    println!(
        "dist-test: Debian {SUITE} root made in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(rootfs)
}

pub fn dist_test(artifacts: &Artifacts, rootfs: &Path) -> Result<()> {
    let start = Instant::now();
    setup::install_packages(TOOLS)?;
    let expected = version_of(Command::new(&artifacts.binary).arg("--version"))?;
    ensure!(
        expected.version == artifacts.version,
        "the binary says version {}, its file name {}",
        expected.version,
        artifacts.version
    );
    // SHA256SUMS as a downloader checks it.
    let dir = artifacts.sums.parent().context("SHA256SUMS directory")?;
    run_cmd(
        Command::new("sha256sum")
            .args(["--check", "--strict", "SHA256SUMS"])
            .current_dir(dir),
    )?;
    in_bullseye(artifacts, rootfs, &expected)?;
    deb_in_bullseye(artifacts, rootfs, &expected)?;
    image_under_podman(artifacts, &expected)?;
    println!(
        "dist-test: passed in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `--version` output of a command, parsed.
fn version_of(cmd: &mut Command) -> Result<VersionInfo> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run `{}`", show(cmd)))?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "`{}` failed: {}{}",
        show(cmd),
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    VersionInfo::parse(&text)
}

/// A command run chrooted in `rootfs`, with /proc, /sys and tracefs
/// mounted in a mount namespace of its own (they go when it ends).
fn chrooted(rootfs: &Path, argv: &[&str]) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "set -e; r=$1; shift; \
             mount -t proc proc \"$r/proc\"; \
             mount --bind /sys \"$r/sys\"; \
             mount --bind /sys/kernel/tracing \"$r/sys/kernel/tracing\"; \
             exec chroot \"$r\" \"$@\"",
        )
        .arg("sh")
        .arg(rootfs)
        .args(argv);
    cmd
}

/// The static binary in the bullseye root: `--version`, a trace that sees
/// a failed bind made on the host, and `explain` of the port it failed on.
fn in_bullseye(artifacts: &Artifacts, rootfs: &Path, expected: &VersionInfo) -> Result<()> {
    let glibc = fs::read_dir(rootfs.join("lib/x86_64-linux-gnu"))
        .or_else(|_| fs::read_dir(rootfs.join("usr/lib/x86_64-linux-gnu")))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libc-2.") && n.ends_with(".so"))
        .unwrap_or_else(|| "libc (version unknown)".into());
    let bin = rootfs.join(IN_ROOT_BIN.trim_start_matches('/'));
    fs::create_dir_all(bin.parent().context("binary dir")?)?;
    fs::copy(&artifacts.binary, &bin)?;

    let got = version_of(&mut chrooted(rootfs, &[IN_ROOT_BIN, "--version"]))?;
    ensure!(
        got == *expected,
        "in {SUITE}, --version says {got:?}, on the host {expected:?}"
    );
    println!(
        "dist-test: {SUITE} ({glibc}): inspector {} commit {} kernel programs sha256:{}",
        got.version, got.commit, got.ebpf_sha256
    );

    // A listener on the host, then trace in the root and a failed bind.
    let holder = TcpListener::bind("127.0.0.1:0")?;
    let port = holder.local_addr()?.port();
    let port_arg = port.to_string();
    let mut trace = chrooted(
        rootfs,
        &[
            IN_ROOT_BIN,
            "trace",
            "--duration",
            "2",
            "--json",
            "--port",
            &port_arg,
        ],
    );
    println!("$ {}", show(&trace));
    let mut child = trace
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting trace in the root")?;
    let stderr = child.stderr.take().context("trace stderr")?;
    let (tx, banner) = mpsc::channel();
    let err_lines = thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" mode, attached: ") {
                let _ = tx.send(line.clone());
            }
            all.push(line);
        }
        all
    });
    let banner = match banner.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let lines = err_lines.join().unwrap_or_default();
            bail!(
                "trace in {SUITE} never said it attached; its stderr:\n{}",
                lines.join("\n")
            );
        }
    };
    check_banner(&banner, &format!("trace in {SUITE}"))?;
    let refused = std::net::TcpListener::bind(("127.0.0.1", port));
    ensure!(
        refused.is_err(),
        "a second bind on the listening port {port} succeeded"
    );
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .context("trace stdout")?
        .read_to_string(&mut stdout)?;
    let status = child.wait()?;
    let err_lines = err_lines.join().unwrap_or_default();
    ensure!(
        status.success(),
        "trace in {SUITE} ended with {status}: {}",
        err_lines.join("\n")
    );
    let failure = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|r| {
            r["type"] == "bind" && r["errno"] == "EADDRINUSE" && r["req_port"] == u64::from(port)
        });
    let Some(failure) = failure else {
        bail!(
            "trace in {SUITE} did not report the failed bind on port {port}; it printed:\n{stdout}{}",
            err_lines.join("\n")
        );
    };
    println!("dist-test: {SUITE}: {banner}");
    println!("dist-test: {SUITE}: trace: {failure}");

    // explain of the port the host's listener holds.
    let out = chrooted(rootfs, &[IN_ROOT_BIN, "explain", &port_arg])
        .output()
        .context("running explain in the root")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "explain in {SUITE} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = std::process::id().to_string();
    ensure!(
        text.contains("LISTEN")
            && text.contains(&format!("127.0.0.1:{port}"))
            && text.contains(&pid),
        "explain {port} in {SUITE} does not name the listener (pid {pid}):\n{text}"
    );
    for line in text.lines().filter(|l| !l.trim().is_empty()).take(6) {
        println!("dist-test: {SUITE}: explain: {line}");
    }
    drop(holder);
    Ok(())
}

/// The banner must show the syscall tracepoints (tracefs reachable, no
/// fallback to hooking every system call) and the TIME_WAIT timer hooks
/// (kallsyms readable), or fentry mode.
fn check_banner(banner: &str, who: &str) -> Result<()> {
    if banner.contains("fentry mode") {
        return Ok(());
    }
    for hook in [
        "syscalls:sys_exit_bind",
        "timer_start",
        "inet_sock_set_state",
    ] {
        ensure!(
            banner.contains(hook),
            "{who} did not attach {hook}: {banner}"
        );
    }
    Ok(())
}

/// The .deb in the bullseye root: installs, its files are where a Debian
/// system looks for them, the unit verifies, and it purges cleanly.
fn deb_in_bullseye(artifacts: &Artifacts, rootfs: &Path, expected: &VersionInfo) -> Result<()> {
    let name = artifacts
        .deb
        .file_name()
        .context("deb name")?
        .to_string_lossy()
        .into_owned();
    let inside = format!("/tmp/{name}");
    fs::copy(&artifacts.deb, rootfs.join(inside.trim_start_matches('/')))?;
    run_cmd(&mut chrooted(rootfs, &["dpkg", "-i", &inside]))
        .context("dpkg -i of the package in the bullseye root")?;
    let listed = chrooted(rootfs, &["dpkg", "-L", "inspector"]).output()?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    for file in [
        "/usr/bin/inspector",
        "/lib/systemd/system/inspector.service",
        "/usr/share/inspector/alerts.yml",
        "/usr/share/man/man1/inspector.1.gz",
        "/usr/share/man/man1/inspector-serve.1.gz",
        "/usr/share/bash-completion/completions/inspector",
        "/usr/share/zsh/vendor-completions/_inspector",
        "/usr/share/fish/vendor_completions.d/inspector.fish",
    ] {
        ensure!(
            listed.lines().any(|l| l == file),
            "the package does not install {file}; dpkg -L lists:\n{listed}"
        );
    }
    let got = version_of(&mut chrooted(rootfs, &["/usr/bin/inspector", "--version"]))?;
    ensure!(
        got == *expected,
        "the packaged binary says {got:?}, the dist binary {expected:?}"
    );
    // dpkg --verify checks every file against the package's md5sums.
    run_cmd(&mut chrooted(rootfs, &["dpkg", "--verify", "inspector"]))
        .context("dpkg --verify inspector")?;
    verify_unit(rootfs)?;
    run_cmd(&mut chrooted(rootfs, &["dpkg", "--purge", "inspector"]))
        .context("dpkg --purge inspector")?;
    ensure!(
        !rootfs.join("usr/bin/inspector").exists(),
        "dpkg --purge left /usr/bin/inspector behind"
    );
    let _ = fs::remove_file(rootfs.join(inside.trim_start_matches('/')));
    println!("dist-test: {SUITE}: dpkg -i {name}: installed, verified, purged");
    Ok(())
}

/// `systemd-analyze verify` of the unit as the package installed it, with
/// `--root` at the bullseye root (so ExecStart's /usr/bin/inspector is
/// the packaged one) and this host's system units (the targets the unit
/// refers to) in the root's /etc/systemd/system for the time of the call.
/// Any complaint fails the check, warnings included. The manual page the
/// unit names is checked among the package's files (the root has no `man`).
fn verify_unit(rootfs: &Path) -> Result<()> {
    let etc = rootfs.join("etc/systemd/system");
    fs::create_dir_all(&etc)?;
    let host_units = ["/lib/systemd/system", "/usr/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("multi-user.target").exists())
        .context("no systemd units on this host to verify against (apt-get install systemd)")?;
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "set -e; mount --bind \"$1\" \"$2\"; \
             exec systemd-analyze verify --man=no --root=\"$3\" \
             /lib/systemd/system/inspector.service",
        )
        .arg("sh")
        .arg(host_units)
        .arg(&etc)
        .arg(rootfs)
        .output()
        .context("running systemd-analyze verify")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify of inspector.service: {}\n{said}",
        out.status
    );
    println!("dist-test: systemd-analyze verify inspector.service: no complaint");
    Ok(())
}

/// The container as the DaemonSet describes it.
struct PodSpec {
    args: Vec<String>,
    capabilities: Vec<String>,
    /// (host path, container path, read-only)
    mounts: Vec<(String, String, bool)>,
    memory_limit: String,
    read_only_root: bool,
    no_new_privileges: bool,
}

/// Reads the DaemonSet of `packaging/daemonset.yaml`.
fn pod_spec() -> Result<PodSpec> {
    let path = root().join("packaging/daemonset.yaml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let docs = YamlLoader::load_from_str(&text)
        .with_context(|| format!("{} is not valid YAML", path.display()))?;
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .context("daemonset.yaml has no DaemonSet")?;
    let pod = &ds["spec"]["template"]["spec"];
    ensure!(
        pod["hostNetwork"].as_bool() == Some(true) && pod["hostPID"].as_bool() == Some(true),
        "the DaemonSet's pod is expected on the host's network and PIDs"
    );
    let container = &pod["containers"][0];
    let strings = |y: &Yaml, what: &str| -> Result<Vec<String>> {
        y.as_vec()
            .with_context(|| format!("the DaemonSet has no {what} list"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("a non-string in {what}"))
            })
            .collect()
    };
    let sc = &container["securityContext"];
    let volumes = pod["volumes"]
        .as_vec()
        .context("the DaemonSet has no volumes")?;
    let mut mounts = Vec::new();
    for m in container["volumeMounts"]
        .as_vec()
        .context("the DaemonSet has no volumeMounts")?
    {
        let name = m["name"].as_str().context("a volumeMount without a name")?;
        let volume = volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .with_context(|| format!("no volume {name} for its volumeMount"))?;
        let host = volume["hostPath"]["path"]
            .as_str()
            .with_context(|| format!("volume {name} is not a hostPath"))?;
        let target = m["mountPath"]
            .as_str()
            .with_context(|| format!("volumeMount {name} has no mountPath"))?;
        mounts.push((
            host.to_owned(),
            target.to_owned(),
            m["readOnly"].as_bool() == Some(true),
        ));
    }
    Ok(PodSpec {
        args: strings(&container["args"], "args")?,
        capabilities: strings(&sc["capabilities"]["add"], "capabilities.add")?,
        mounts,
        memory_limit: container["resources"]["limits"]["memory"]
            .as_str()
            .context("the DaemonSet has no memory limit")?
            .to_owned(),
        read_only_root: sc["readOnlyRootFilesystem"].as_bool() == Some(true),
        no_new_privileges: sc["allowPrivilegeEscalation"].as_bool() == Some(false),
    })
}

/// Kubernetes quantity (`256Mi`) as podman's `--memory` value.
fn podman_memory(quantity: &str) -> Result<String> {
    for (suffix, unit) in [("Ki", "k"), ("Mi", "m"), ("Gi", "g")] {
        if let Some(n) = quantity.strip_suffix(suffix)
            && n.parse::<u64>().is_ok()
        {
            return Ok(format!("{n}{unit}"));
        }
    }
    bail!("memory limit {quantity}: expected a whole number of Ki, Mi or Gi")
}

/// What must go when the image check ends, however it ends.
struct Cleanup {
    container: String,
    netns: String,
    image: Option<String>,
    helper: Option<(Child, ChildStdin)>,
    made_dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.helper.take() {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "2", &self.container])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(image) = &self.image {
            let _ = Command::new("podman")
                .args(["rmi", "--force", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .stderr(Stdio::null())
            .status();
        for dir in &self.made_dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn image_under_podman(artifacts: &Artifacts, expected: &VersionInfo) -> Result<()> {
    let spec = pod_spec()?;
    let caps_in_spec: Vec<String> = spec
        .capabilities
        .iter()
        .map(|c| format!("CAP_{c}"))
        .collect();
    ensure!(
        caps_in_spec == expected.capabilities,
        "the DaemonSet adds {caps_in_spec:?}, the binary asks for {:?}",
        expected.capabilities
    );
    let tag = format!("localhost/inspector:{}", expected.version);
    let mut cleanup = Cleanup {
        container: format!("inspector-dist-test-{}", std::process::id()),
        netns: format!("inspector-dist-test-{}", std::process::id()),
        image: None,
        helper: None,
        made_dirs: Vec::new(),
    };

    // The archive as a registry would serve it: loaded, then tagged.
    let loaded = Command::new("podman")
        .args(["load", "--quiet", "--input"])
        .arg(&artifacts.image)
        .output()
        .context("running podman load")?;
    ensure!(
        loaded.status.success(),
        "podman load of {} failed: {}",
        artifacts.image.display(),
        String::from_utf8_lossy(&loaded.stderr)
    );
    let said = String::from_utf8_lossy(&loaded.stdout);
    let id = said
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .context("podman load named no image")?
        .trim()
        .to_owned();
    cleanup.image = Some(id.clone());
    run_cmd(Command::new("podman").args(["tag", &id, &tag]))?;
    cleanup.image = Some(tag.clone());

    // hostPath volumes of type DirectoryOrCreate: the kubelet would make
    // them; so does the test, and removes what it made.
    for (host, _, _) in &spec.mounts {
        let p = Path::new(host);
        if !p.exists() {
            fs::create_dir_all(p).with_context(|| format!("creating {host}"))?;
            cleanup.made_dirs.push(p.to_owned());
        }
    }

    // The DaemonSet's listen address, on a free port.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut args = spec.args.clone();
    let value = args
        .iter()
        .position(|a| a == "--listen")
        .map(|i| i + 1)
        .filter(|&i| i < args.len())
        .context("the DaemonSet's args name no --listen address")?;
    let ip = args[value]
        .rsplit_once(':')
        .map(|(ip, _)| ip.to_owned())
        .with_context(|| format!("--listen {} is not ADDR:PORT", args[value]))?;
    ensure!(
        ip == "127.0.0.1",
        "the DaemonSet listens on {ip}, not on loopback: the endpoint has no authentication"
    );
    args[value] = format!("{ip}:{port}");
    let (nofile, nproc) = ulimits();
    let mut run = Command::new("podman");
    // runc: crun refuses hybrid cgroup hierarchies (cgroup v1 controllers
    // with a v2 mount), which these machines have. Rlimits: these
    // machines' root cannot raise them (no CAP_SYS_RESOURCE), and podman
    // would ask for more than the host's limits; Kubernetes has no
    // setting for them.
    run.args([
        "--runtime",
        "runc",
        "run",
        "--rm",
        "--name",
        &cleanup.container,
    ])
    .args(["--network", "host", "--pid", "host"])
    .args(["--cap-drop", "all"]);
    for cap in &spec.capabilities {
        run.args(["--cap-add", cap]);
    }
    if spec.read_only_root {
        run.arg("--read-only");
    }
    if spec.no_new_privileges {
        run.args(["--security-opt", "no-new-privileges"]);
    }
    for (host, target, ro) in &spec.mounts {
        let opt = if *ro { ":ro" } else { "" };
        run.args(["--volume", &format!("{host}:{target}{opt}")]);
    }
    run.args(["--memory", &podman_memory(&spec.memory_limit)?])
        .args(["--ulimit", &format!("nofile={nofile}:{nofile}")])
        .args(["--ulimit", &format!("nproc={nproc}:{nproc}")])
        .arg(&tag)
        .args(&args);
    println!("$ {}", show(&run));
    let mut child = run
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting podman run")?;
    let stderr = child.stderr.take().context("podman stderr")?;
    let (tx, lines_rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let result = exercise_serve(&mut cleanup, port, &lines_rx, &mut log);
    // SIGTERM, then the rest of its log.
    let _ = Command::new("podman")
        .args(["stop", "--time", "5", &cleanup.container])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let status = child.wait();
    let _ = reader.join();
    log.extend(lines_rx.try_iter());
    if let Err(e) = result {
        bail!("{e:#}\nthe container's log:\n{}", log.join("\n"));
    }
    let status = status?;
    ensure!(
        status.success(),
        "serve in the container ended with {status} on SIGTERM; its log:\n{}",
        log.join("\n")
    );
    let warnings: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(": warning:") || l.contains(": error:"))
        .filter(|l| !(l.contains("fentry/fexit refused") && fentry_refused_to_root(artifacts)))
        .collect();
    ensure!(
        warnings.is_empty(),
        "serve in the container was refused something: {warnings:?}; its log:\n{}",
        log.join("\n")
    );
    Ok(())
}

/// Waits for serve's banner, makes a failed bind in a new network
/// namespace, and scrapes until the metrics report it and the log
/// explains it.
fn exercise_serve(
    cleanup: &mut Cleanup,
    port: u16,
    lines: &mpsc::Receiver<String>,
    log: &mut Vec<String>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let banner = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                log.push(line.clone());
                if line.contains("serving http://") {
                    break line;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("serve in the container did not start within 60 s")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("serve in the container ended before it started serving")
            }
        }
    };
    check_banner(&banner, "serve in the container")?;
    println!("dist-test: container: {banner}");

    run_cmd(Command::new("ip").args(["netns", "add", &cleanup.netns]))?;
    let exe = std::env::current_exe().context("the xtask binary's path")?;
    let mut helper = Command::new("ip")
        .args(["netns", "exec", &cleanup.netns])
        .arg(exe)
        .arg("bind-conflict")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the bind-conflict helper in the new namespace")?;
    let helper_pid = helper.id();
    let stdin = helper.stdin.take().context("helper stdin")?;
    let mut first = String::new();
    BufReader::new(helper.stdout.take().context("helper stdout")?).read_line(&mut first)?;
    cleanup.helper = Some((helper, stdin));
    let failed_port: u16 = first
        .trim()
        .parse()
        .with_context(|| format!("the helper said {first:?}, not the port it failed on"))?;

    // Labels after these (the pod labels of --kubernetes) may follow.
    let counter = format!(
        "inspector_bind_failures_total{{proto=\"tcp\",port=\"{failed_port}\",errno=\"EADDRINUSE\""
    );
    let holder = format!("held by LISTEN 0.0.0.0:{failed_port} (pid {helper_pid} ");
    let mut metrics = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        log.extend(lines.try_iter());
        metrics = scrape(port)?;
        // The explanation is free text: in the log, not in a label.
        let explained = log.iter().any(|l| l.contains(&holder));
        let counted = metrics
            .lines()
            .any(|l| l.starts_with(&counter) && l.ends_with("} 1"));
        if counted && explained {
            println!("dist-test: container: curl http://127.0.0.1:{port}/metrics:");
            for line in metrics.lines().filter(|l| {
                l.starts_with("inspector_bind_failures_total{")
                    || l.starts_with("inspector_last_bind_failure_info{")
                    || l.starts_with("inspector_bind_decisions_total{proto=\"tcp\",phase=\"bind\"")
            }) {
                println!("dist-test: container:   {line}");
            }
            if let Some(line) = log.iter().find(|l| l.contains(&holder)) {
                println!("dist-test: container: log: {line}");
            }
            return Ok(());
        }
        thread::sleep(Duration::from_millis(300));
    }
    let shown: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("bind_fail"))
        .collect();
    bail!(
        "within 20 s the metrics did not report the failed bind on port {failed_port} in namespace \
         {}, or the log did not name its holder (pid {helper_pid}); the metrics say:\n{}",
        cleanup.netns,
        shown.join("\n")
    )
}

/// GET /metrics with curl.
fn scrape(port: u16) -> Result<String> {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/metrics"))
        .output()
        .context("cannot run curl (apt-get install curl)")?;
    ensure!(
        out.status.success(),
        "curl of the container's /metrics failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this kernel refuses fentry to full root too (lockdown), which
/// makes the container's fallback warning no refusal of its own.
fn fentry_refused_to_root(artifacts: &Artifacts) -> bool {
    Command::new(&artifacts.binary)
        .args([
            "--mode",
            "fentry",
            "trace",
            "--duration",
            "0.1",
            "--port",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| !s.success())
}

/// Open files and processes for the container: this process's own limits
/// (which it cannot raise), capped to what an agent needs.
fn ulimits() -> (u64, u64) {
    let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = |name: &str| {
        limits.lines().find(|l| l.starts_with(name)).and_then(|l| {
            l[name.len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
    };
    (
        soft("Max open files").unwrap_or(1024).min(8192),
        soft("Max processes").unwrap_or(1024).min(4096),
    )
}

/// `cargo xtask bind-conflict` (run by the image check inside a new
/// network namespace): listens on a port, fails to bind it a second time
/// (EADDRINUSE), prints the port, and keeps the listener until standard
/// input closes.
pub fn bind_conflict() -> Result<()> {
    let holder = TcpListener::bind("0.0.0.0:0")?;
    let port = holder.local_addr()?.port();
    match TcpListener::bind(("0.0.0.0", port)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        other => bail!("a second bind on port {port} gave {other:?}, not EADDRINUSE"),
    }
    let mut out = std::io::stdout();
    writeln!(out, "{port}")?;
    out.flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(holder);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemonset_describes_a_runnable_pod() {
        let spec = pod_spec().expect("daemonset.yaml parses");
        assert_eq!(spec.args.first().map(String::as_str), Some("serve"));
        let listen = spec
            .args
            .iter()
            .position(|a| a == "--listen")
            .and_then(|i| spec.args.get(i + 1))
            .expect("the DaemonSet names its --listen address");
        assert!(
            listen.starts_with("127.0.0.1:"),
            "the DaemonSet listens on {listen}: the endpoint has no authentication"
        );
        for needed in ["/sys/kernel/tracing", "/var/log/pods"] {
            assert!(
                spec.mounts
                    .iter()
                    .any(|(h, t, ro)| h == needed && t == needed && *ro),
                "the DaemonSet does not mount {needed} read-only"
            );
        }
        assert!(spec.read_only_root && spec.no_new_privileges);
        assert_eq!(
            podman_memory(&spec.memory_limit).ok().as_deref(),
            Some("256m")
        );
    }

    #[test]
    fn memory_quantities_convert() {
        assert_eq!(podman_memory("64Ki").ok().as_deref(), Some("64k"));
        assert_eq!(podman_memory("1Gi").ok().as_deref(), Some("1g"));
        assert!(podman_memory("256M").is_err());
        assert!(podman_memory("xMi").is_err());
    }
}
