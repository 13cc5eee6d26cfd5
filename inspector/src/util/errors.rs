//! Errors as the user reads them: one line, each cause once.

/// An error and its causes on one line, each once (`{:#}` for errors that
/// are not `anyhow`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// True when `e` comes from writing to a reader that left (EPIPE, as
/// with `| head`): a normal end of output, not an error to print.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
