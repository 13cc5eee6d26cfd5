//! Running `inspector serve` in tests: a child on a free loopback port,
//! stopped when dropped, scraped over plain HTTP/1.0.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A tool of the `prometheus` package, or a skip (a failure in CI).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            !ci(),
            "CI=true and {name} is missing (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: {name} not found (apt-get install prometheus)");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Running(pub Child);

impl Running {
    /// SIGTERM and wait: whether it exited by itself in time, successfully.
    pub fn stop(&mut self) -> bool {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.0 (no chunked bodies); the body, or `None` on any
/// failure or a non-200 status.
pub fn get(port: u16, path: &str, accept: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    if let Err(e) = s.read_to_string(&mut text) {
        eprintln!("GET {path}: {e}");
        return None;
    }
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.")
        .then_some(())
        .filter(|()| head.split(' ').nth(1) == Some("200"))?;
    Some(body.to_owned())
}

/// Starts `inspector serve` on a free port and waits until it answers;
/// `None` (a skip, or a failure in CI) when it cannot start.
pub fn start_serve() -> Option<(Running, u16)> {
    start_serve_with(&[])
}

/// [`start_serve`] with more arguments.
pub fn start_serve_with(extra: &[&str]) -> Option<(Running, u16)> {
    spawn_serve(extra, Stdio::inherit(), |_| {})
}

/// Starts `inspector serve` on a free loopback port with `extra`
/// arguments, its stderr to `stderr`, the command adjusted by `configure`
/// (limits, say), and waits until it answers `/healthz` over plain HTTP.
pub fn spawn_serve(
    extra: &[&str],
    stderr: Stdio,
    configure: impl FnOnce(&mut Command),
) -> Option<(Running, u16)> {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_inspector"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    configure(&mut cmd);
    let child = cmd.spawn().expect("spawn inspector serve");
    let mut serve = Running(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if get(port, "/healthz", "*/*").is_some_and(|b| b == "ok\n") {
            return Some((serve, port));
        }
        if let Ok(Some(status)) = serve.0.try_wait() {
            assert!(!ci(), "CI=true and inspector serve exited: {status}");
            eprintln!("SKIPPED: inspector serve exited ({status}): see its stderr above");
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("inspector serve did not answer /healthz within 60 s");
}

/// A Prometheus server (Debian's package) on a free loopback port, with
/// `scrape_configs` (YAML, indented as a top-level key's list) scraped
/// every second; its data in `dir`.
pub fn start_prometheus(
    prometheus: &std::path::Path,
    scrape_configs: &str,
    dir: &std::path::Path,
) -> (Running, u16) {
    let config = dir.join("prom.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{scrape_configs}"
        ),
    )
    .expect("prom.yml");
    let port = free_port();
    let child = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn prometheus");
    (Running(child), port)
}
