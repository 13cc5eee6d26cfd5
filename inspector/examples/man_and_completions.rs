//! Writes the manual pages (one per command, `inspector.1`,
//! `inspector-trace.1`, ...) and the bash, zsh and fish completions of the
//! command line, from its clap definition, for the Debian package:
//!
//! `man_and_completions OUT_DIR` writes `OUT_DIR/man/*.1` and
//! `OUT_DIR/completions/{inspector.bash,_inspector,inspector.fish}`.
//! Run by `cargo xtask dist`.

use std::{
    fs,
    os::unix::fs::DirBuilderExt as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::CommandFactory as _;
use clap_complete::Shell;
use inspector::cli::Cli;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        eprintln!("usage: man_and_completions OUT_DIR");
        return ExitCode::FAILURE;
    };
    match write_all(Path::new(&out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man_and_completions: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> Result<(), String> {
    let man = private_dir(&out.join("man"))?;
    clap_mangen::generate_to(Cli::command(), &man)
        .map_err(|e| format!("writing the manual pages to {}: {e}", man.display()))?;
    let completions = private_dir(&out.join("completions"))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "inspector", &completions)
            .map_err(|e| format!("writing the {shell} completions: {e}"))?;
    }
    Ok(())
}

/// Creates `dir` (mode 0700 when new) and returns it.
fn private_dir(dir: &Path) -> Result<PathBuf, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir.to_owned())
}
