use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = inspector::cli::Cli::parse();
    // Kernel-side diagnostics (aya-log) and our own warnings go to stderr,
    // except under the dashboard, which owns the terminal.
    let dashboard = matches!(
        cli.command,
        None | Some(inspector::cli::Command::Dashboard(_))
    );
    if !dashboard {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
            .format(|buf, record| {
                use std::io::Write as _;
                writeln!(
                    buf,
                    "inspector: {}: {}",
                    record.level().as_str().to_lowercase(),
                    record.args()
                )
            })
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("inspector: error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(inspector::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The reader left (`| head`): everything it wanted was written.
        Err(e) if inspector::util::errors::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("inspector: error: {e:#}");
            std::process::ExitCode::from(inspector::exit_status(&e))
        }
    }
}
