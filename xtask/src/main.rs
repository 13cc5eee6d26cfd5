//! `cargo xtask`: the project's entry points (`setup`, `test`, `run`) as plain
//! Rust, so a fresh machine and CI need nothing but cargo to get going, and
//! there is exactly one test command to keep in sync with the README and CI.

mod bench;
mod dist;
mod dist_test;
mod setup;
mod vm;

use std::{
    env,
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, ExitCode},
};

use anyhow::{Context as _, Result, bail};
use clap::Parser;

/// The project's tasks: set up a machine, test, run, benchmark.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", about)]
struct Options {
    #[command(subcommand)]
    command: Subcommand,
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Install what building and testing need.
    ///
    /// Debian's rustc-web and BPF core library, bpf-linker, a tracefs mount.
    Setup,
    /// Check formatting and clippy, then run every test [-- TEST-ARGS...].
    ///
    /// Tests run one at a time (they share kernel state). As root, and
    /// unless TEST-ARGS filter the tests, a benchmark smoke run and the VM
    /// tests follow.
    #[command(override_usage = "cargo xtask test [-- TEST-ARGS...]")]
    Test {
        /// Passed to the test binaries, e.g. `-- --nocapture` or a test name.
        #[arg(
            value_name = "TEST-ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<OsString>,
    },
    /// Build the release binary and run it with [ARGS...].
    ///
    /// Every argument, `--help` included, goes to `inspector`.
    #[command(disable_help_flag = true)]
    Run {
        /// Passed to `inspector` as they are, e.g. `trace --port 8080 --json`.
        #[arg(
            value_name = "ARGS",
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        args: Vec<OsString>,
    },
    /// Run the benchmarks into target/bench/ [--smoke: briefly] [--long: add a
    /// 5-minute memory run].
    Bench(bench::Options),
    /// Run the privileged tests in QEMU on Debian's kernels [--kernel 6.1|6.12:
    /// only that one].
    #[command(name = "vm-test")]
    VmTest(vm::Options),
    /// Build the release artifacts into target/dist/: static binary, .deb,
    /// OCI image archive, SHA256SUMS [--allow-dirty].
    Dist(dist::Options),
    /// Build the artifacts, then try them: the binary and the .deb in a
    /// Debian 11 root, the image under podman as the DaemonSet runs it.
    #[command(name = "dist-test")]
    DistTest(dist::Options),
    /// Helper of dist-test, run in a new network namespace: listen, fail
    /// to bind the same port, print it, hold it until stdin closes.
    #[command(name = "bind-conflict", hide = true)]
    BindConflict,
}

fn main() -> ExitCode {
    let Options { command } = Options::parse();
    let result = match command {
        Subcommand::Setup => setup::setup(),
        Subcommand::Test { args } => test(args),
        Subcommand::Run { args } => run(args),
        Subcommand::Bench(opts) => bench::bench(opts),
        Subcommand::VmTest(opts) => vm::vm_test(opts),
        Subcommand::Dist(opts) => dist::dist(&opts).map(drop),
        Subcommand::DistTest(opts) => dist_test(&opts),
        Subcommand::BindConflict => dist_test::bind_conflict(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Format, lint, then test; tests run one at a time because they share
/// kernel state (BPF programs, sockets), and need root to load BPF.
fn test(extra: Vec<OsString>) -> Result<()> {
    setup::setup()?;
    let full = setup::is_root() && extra.is_empty();
    // The Debian 11 root of the release checks downloads meanwhile (it is
    // kept under target/ for the next run).
    let bullseye = if full {
        setup::install_packages(dist_test::TOOLS)?;
        Some(std::thread::spawn(dist_test::bullseye_root))
    } else {
        if extra.is_empty() {
            println!("test: not root: the release checks (cargo xtask dist-test) are skipped");
        }
        None
    };
    step("format", cargo(["fmt", "--all", "--", "--check"]))?;
    step(
        "clippy",
        cargo([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    println!(
        "test: root={}, CI={}",
        if setup::is_root() { "yes" } else { "no" },
        env::var("CI").unwrap_or_else(|_| "unset".into()),
    );
    let filtered = !extra.is_empty();
    // The same build on Debian's 6.1 and 6.12 kernels, in QEMU, booted
    // while the host's tests run: the emulators keep the cores busy
    // through the tests' waits (each test bounds its own timing and
    // asserts on what it owns, not on an idle host).
    let guests = if setup::is_root() && !filtered {
        step(
            "build the tests",
            cargo(["test", "--workspace", "--no-run"]),
        )?;
        let guests = vm::prepare(vm::Options { kernel: None })?;
        Some(std::thread::spawn(move || guests.run()))
    } else {
        None
    };
    // Every test binary runs even after one fails: the report then names
    // every failure of the run, not only the first.
    let mut tests = cargo([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]);
    tests.args(extra);
    let host = step("test", tests);
    let guests = guests.map(|g| {
        g.join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the guests' thread panicked")))
    });
    host?;
    if let Some(guests) = guests {
        guests?;
    }
    // The benchmark suite, briefly: the report must be produced and
    // well-formed (figures are for `cargo xtask bench`, not for CI).
    if setup::is_root() && !filtered {
        bench::bench(bench::Options {
            smoke: true,
            long: false,
            baseline: None,
        })?;
    }
    if let Some(bullseye) = bullseye {
        // A check of the artifacts, not a release: uncommitted changes are
        // fine (the binary's commit is still checked against HEAD).
        let artifacts = dist::dist(&dist::Options { allow_dirty: true })?;
        let rootfs = bullseye
            .join()
            .map_err(|_| anyhow::anyhow!("making the Debian 11 root panicked"))??;
        dist_test::dist_test(&artifacts, &rootfs)?;
    }
    Ok(())
}

/// `cargo xtask dist-test`: the artifacts, then their checks.
fn dist_test(opts: &dist::Options) -> Result<()> {
    if !setup::is_root() {
        bail!("dist-test mounts, chroots and runs containers: run it as root");
    }
    setup::setup()?;
    setup::install_packages(dist_test::TOOLS)?;
    let rootfs = std::thread::spawn(dist_test::bullseye_root);
    let artifacts = dist::dist(opts)?;
    let rootfs = rootfs
        .join()
        .map_err(|_| anyhow::anyhow!("making the Debian 11 root panicked"))??;
    dist_test::dist_test(&artifacts, &rootfs)
}

/// Build the release binary and replace this process with it, so signals and
/// the terminal go straight to the dashboard.
fn run(args: Vec<OsString>) -> Result<()> {
    setup::setup()?;
    step("build", cargo(["build", "--release", "-p", "inspector"]))?;
    // A relative CARGO_TARGET_DIR is relative to the root, where cargo ran.
    let target = env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    let bin = root().join(target).join("release/inspector");
    let err = Command::new(&bin).args(args).exec();
    Err(err).with_context(|| format!("exec {}", bin.display()))
}

/// The workspace root: this crate lives one level below it.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The rustup cargo that is running us (`$CARGO`), not Debian's /usr/bin/cargo.
fn cargo<const N: usize>(args: [&str; N]) -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args).current_dir(root());
    // `inspector --version` states the commit of a clean checkout built
    // through xtask; every xtask build passes the same value, so none
    // rebuilds the crate for another.
    if let Some(commit) = clean_commit() {
        cmd.env("INSPECTOR_GIT_COMMIT", commit);
    }
    cmd
}

/// HEAD, when the working tree has no uncommitted change to tracked files.
fn clean_commit() -> Option<&'static str> {
    static COMMIT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    COMMIT
        .get_or_init(|| {
            let git = |args: &[&str]| {
                Command::new("git")
                    .arg("-C")
                    .arg(root())
                    .args(args)
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            };
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])?;
            if !dirty.is_empty() {
                return None;
            }
            git(&["rev-parse", "--verify", "HEAD"])
        })
        .as_deref()
}

/// Run one named step of a pipeline, echoing it first.
fn step(name: &str, mut cmd: Command) -> Result<()> {
    println!("$ {}", show(&cmd));
    run_cmd(&mut cmd).with_context(|| format!("step `{name}` failed"))
}

/// Run a command with inherited stdio; fail unless it exits successfully.
fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` ended with {status}", show(cmd));
    }
    Ok(())
}

/// A command line for messages: program and arguments, space separated.
fn show(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(cmd.get_program());
    let mut line = program.to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::{Options, Subcommand};

    fn parse(args: &[&str]) -> Subcommand {
        let argv = std::iter::once("xtask").chain(args.iter().copied());
        match Options::try_parse_from(argv) {
            Ok(o) => o.command,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    fn strings(v: &[std::ffi::OsString]) -> Vec<&str> {
        v.iter().filter_map(|a| a.to_str()).collect()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Options::command().debug_assert();
    }

    #[test]
    fn test_args_after_the_separator_reach_the_test_binaries() {
        for (argv, want) in [
            (&["test"][..], &[][..]),
            (&["test", "--", "--nocapture"], &["--nocapture"]),
            (
                &["test", "probes", "--", "--nocapture"],
                &["probes", "--", "--nocapture"],
            ),
            (&["test", "--nocapture"], &["--nocapture"]),
        ] {
            let Subcommand::Test { args } = parse(argv) else {
                panic!("{argv:?} is not `test`");
            };
            assert_eq!(strings(&args), want, "{argv:?}");
        }
    }

    #[test]
    fn run_passes_every_argument_on_help_included() {
        for argv in [
            &["run", "trace", "--port", "8080", "--json"][..],
            &["run", "--mode", "fentry"],
            &["run", "--help"],
            &["run"],
        ] {
            let Subcommand::Run { args } = parse(argv) else {
                panic!("{argv:?} is not `run`");
            };
            assert_eq!(strings(&args), argv[1..], "{argv:?}");
        }
    }

    #[test]
    fn bench_and_vm_test_flags() {
        let Subcommand::Bench(b) = parse(&["bench", "--smoke", "--long"]) else {
            panic!("not bench");
        };
        assert!(b.smoke && b.long);
        let Subcommand::VmTest(v) = parse(&["vm-test", "--kernel", "6.12"]) else {
            panic!("not vm-test");
        };
        assert_eq!(v.kernel.as_deref(), Some("6.12"));
        assert!(Options::try_parse_from(["xtask", "vm-test", "--kernel", "5.10"]).is_err());
        assert!(Options::try_parse_from(["xtask", "bench", "--fast"]).is_err());
    }
}
