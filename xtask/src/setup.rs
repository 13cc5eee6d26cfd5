//! `cargo xtask setup`: what the build and tests need beyond rustup's stable
//! toolchain. Debian's rustc-web ships `core` for `bpfel-unknown-none`, so
//! the eBPF crate builds without nightly or rust-src; bpf-linker must match
//! its LLVM (22); tracefs is where bpftrace and tests look. Every piece is
//! checked before it is installed, so running this before `test` and `run`
//! costs a second once the machine is set up.

use std::{
    env, fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, step};

const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "bpftool",
    "tmux",
    "strace",
    "iproute2",
    "bpftrace",
    // promtool and a Prometheus server for the `serve` tests.
    "prometheus",
    // The endpoint's TLS test: certificates made with openssl, scraped
    // with curl; the replay memory test measures peak RSS with time(1).
    "openssl",
    "curl",
    "time",
];
const BPF_LINKER: &str = "0.13.0";
const TRACEFS: &str = "/sys/kernel/tracing";

pub fn setup() -> Result<()> {
    packages()?;
    let linker = bpf_linker()?;
    tracefs();
    let rustc = version(Command::new("/usr/bin/rustc").arg("--version"))?;
    println!("setup: ok (rustc-web {rustc}, bpf-linker {linker})");
    Ok(())
}

fn packages() -> Result<()> {
    install_packages(PACKAGES)?;
    quiet_prometheus_service()
}

/// Debian's `prometheus` package enables and starts its own server
/// (prometheus.service, scraping localhost:9090 and node exporters). The
/// tests start their own on free ports and must not depend on it, and a
/// development machine does not need it running: disable it where systemd
/// runs (containers without systemd never start it).
fn quiet_prometheus_service() -> Result<()> {
    if !std::path::Path::new("/run/systemd/system").exists() {
        return Ok(());
    }
    let mut disable = as_root("systemctl", &["prometheus"])?;
    disable.args(["disable", "--now", "prometheus"]);
    step("systemctl disable --now prometheus", disable)
}

/// Installs the Debian packages of `list` that are missing.
pub fn install_packages(list: &[&str]) -> Result<()> {
    let mut missing = Vec::new();
    for &package in list {
        if !installed(package)? {
            missing.push(package);
        }
    }
    if missing.is_empty() {
        println!(
            "setup: Debian packages already installed: {}",
            list.join(" ")
        );
        return Ok(());
    }
    println!("setup: installing Debian packages: {}", missing.join(" "));
    let mut update = as_root("apt-get", &missing)?;
    update.arg("update");
    step("apt-get update", update)?;
    // `env` rather than Command::env: sudo would drop the variable.
    let mut install = as_root("env", &missing)?;
    install.args([
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
    ]);
    install.args(&missing);
    step("apt-get install", install)
}

fn installed(package: &str) -> Result<bool> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .context("cannot run dpkg-query (setup expects Debian 12)")?;
    Ok(out.status.success() && out.stdout == b"install ok installed")
}

/// Returns the installed bpf-linker version.
fn bpf_linker() -> Result<String> {
    match linker_version() {
        Some(v) if v.starts_with("0.13") => {
            println!("setup: bpf-linker {v} already installed");
            return Ok(v);
        }
        Some(v) => println!("setup: bpf-linker {v} found, installing {BPF_LINKER}"),
        None => println!("setup: installing bpf-linker {BPF_LINKER}"),
    }
    let mut install = cargo([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    // Outside the workspace, so its .cargo/config.toml does not apply.
    install
        .current_dir("/")
        .env("LLVM_PREFIX", "/usr/lib/llvm-22");
    step("install bpf-linker", install)?;
    match linker_version() {
        Some(v) if v.starts_with("0.13") => Ok(v),
        found => bail!("after installing bpf-linker {BPF_LINKER}, found {found:?} instead"),
    }
}

/// Version of the first bpf-linker in PATH, $CARGO_HOME/bin or ~/.cargo/bin.
fn linker_version() -> Option<String> {
    let cargo_home = env::var_os("CARGO_HOME").map(PathBuf::from);
    let home = env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo"));
    let candidates = find_in_path("bpf-linker").into_iter().chain(
        [cargo_home, home]
            .into_iter()
            .flatten()
            .map(|d| d.join("bin/bpf-linker")),
    );
    candidates
        .filter(|path| path.is_file())
        .find_map(|path| version(Command::new(path).arg("--version")).ok())
}

fn tracefs() {
    let mounted = fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split_whitespace().skip(1);
            fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
        })
    });
    if mounted {
        println!("setup: tracefs already mounted at {TRACEFS}");
        return;
    }
    let mount = as_root("mount", &["tracefs"]).and_then(|mut mount| {
        mount.args(["-t", "tracefs", "nodev", TRACEFS]);
        step("mount tracefs", mount)
    });
    match mount {
        Ok(()) => println!("setup: mounted tracefs at {TRACEFS}"),
        Err(err) => eprintln!("setup: warning: {err:#}"),
    }
}

/// The second word of a `tool --version` line, e.g. `1.96.0` of `rustc 1.96.0 (…)`.
fn version(cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} --version"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.split_whitespace().nth(1) {
        Some(v) if out.status.success() => Ok(v.to_owned()),
        _ => bail!("{program} --version failed: {}", stdout.trim()),
    }
}

/// `program` run as root: directly when we are root, else through sudo.
/// `what` names what it is for, in the error when neither is possible.
fn as_root(program: &str, what: &[&str]) -> Result<Command> {
    if is_root() {
        return Ok(Command::new(program));
    }
    if find_in_path("sudo").is_none() {
        bail!(
            "not root and no sudo to set up {}: run `cargo xtask setup` as root",
            what.join(" ")
        );
    }
    let mut cmd = Command::new("sudo");
    cmd.arg(program);
    Ok(cmd)
}

/// Whether the effective uid is 0, from /proc (std has no geteuid).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
