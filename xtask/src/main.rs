//! `cargo xtask`: the project's entry points (`setup`, `test`, `run`) as plain
//! Rust, so a fresh machine and CI need nothing but cargo to get going, and
//! there is exactly one test command to keep in sync with the README and CI.

mod bench;
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

const USAGE: &str = "usage: cargo xtask <setup | test [-- TEST-ARGS...] | run [ARGS...] | bench [--smoke] [--long] | vm-test [--kernel 6.1|6.12]>";

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let sub = args.next();
    let rest: Vec<OsString> = args.collect();
    let result = match sub.as_ref().and_then(|s| s.to_str()) {
        Some("setup") => setup::setup(),
        Some("test") => test(rest),
        Some("run") => run(rest),
        Some("bench") => bench::bench(&rest),
        Some("vm-test") => match rest.iter().map(|a| a.to_str()).collect::<Vec<_>>()[..] {
            [] => vm::vm_test(None),
            [Some("--kernel"), Some(k)] => vm::vm_test(Some(k)),
            _ => Err(anyhow::anyhow!("{USAGE}")),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::FAILURE;
        }
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
    // `cargo xtask test -- --nocapture` arrives here as `-- --nocapture`.
    let extra = match extra.split_first() {
        Some((first, rest)) if first == "--" => rest.to_vec(),
        _ => extra,
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
    let mut tests = cargo(["test", "--workspace", "--", "--test-threads=1"]);
    let filtered = !extra.is_empty();
    tests.args(extra);
    step("test", tests)?;
    // The benchmark suite, briefly: the report must be produced and
    // well-formed (figures are for `cargo xtask bench`, not for CI).
    if setup::is_root() && !filtered {
        bench::bench(&["--smoke".into()])?;
        // The same build on Debian's 6.1 and 6.12 kernels, in QEMU.
        vm::vm_test(None)?;
    }
    Ok(())
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
    cmd
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
