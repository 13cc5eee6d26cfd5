//! `cargo xtask vm-test`: the privileged test binaries and the same
//! `inspector` build, run inside QEMU on Debian's own kernels (6.1 and
//! 6.12), booted under software emulation with a minimal initramfs.
//! Everything comes from Debian packages, fetched into `target/vm/`.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use cargo_metadata::{Artifact, Message};

use crate::{cargo, root, setup, step};

const TOOLS: &[&str] = &["qemu-system-x86", "busybox-static", "cpio", "binutils"];
/// Run once per guest, in fentry mode, which only the guests have: the
/// host runs them in tracepoint mode, and the cross-mode check below
/// compares the two modes' events on each guest kernel.
const FENTRY_ONLY: &[&str] = &["probes", "cli", "scenarios"];
/// Run once per guest: the cross-mode check (it loads both modes itself),
/// and the tests that do not depend on the attach mode (`explain` and the
/// socket iterators read the kernel's tables, not the probes).
const CROSS_MODE: &str = "modes";
const ONCE: &[&str] = &["explain", "iter"];
/// Random cases of the explain differential test per guest: software
/// emulation runs it about ten times slower than the host.
const GUEST_EXPLAIN_CASES: u32 = 200;
/// Per guest, boot to power-off.
const GUEST_LIMIT: Duration = Duration::from_secs(1800);

/// Newest package whose name matches `pattern` (an apt-cache regex).
fn newest(pattern: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["search", "--names-only", pattern])
        .output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort_by_key(|n| version_key(n));
    names
        .pop()
        .with_context(|| format!("no Debian package matches {pattern} (apt-get update?)"))
}

fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Downloads `package` into `dir` (once) and returns its vmlinuz.
fn kernel(dir: &Path, package: &str) -> Result<PathBuf> {
    let unpacked = dir.join(package);
    if let Some(v) = find_vmlinuz(&unpacked) {
        return Ok(v);
    }
    if !fs::read_dir(dir)?.filter_map(Result::ok).any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(&format!("{package}_"))
    }) {
        let mut dl = Command::new("apt-get");
        dl.args(["download", package]).current_dir(dir);
        step("apt-get download", dl)?;
    }
    let deb = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .context("downloaded kernel package not found")?;
    fs::create_dir_all(&unpacked)?;
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(&deb).arg(&unpacked);
    step("unpack kernel", x)?;
    find_vmlinuz(&unpacked).context("no boot/vmlinuz-* in the kernel package")
}

fn find_vmlinuz(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir.join("boot"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
}

#[derive(clap::Args)]
pub struct Options {
    /// Boot only this kernel (default: all of them).
    #[arg(long, value_parser = ["6.1", "6.12"])]
    pub kernel: Option<String>,
}

/// What the guests run, as `cargo test --workspace --no-run` built it: the
/// test executables by target name, and the `inspector` binary the tests
/// start.
///
/// The same command as the host's test build, so nothing is compiled
/// again: `-p inspector`, or `cargo build`, resolves some dependencies'
/// features differently and would compile them, and the binaries, a
/// second time.
fn test_binaries() -> Result<(Vec<(String, PathBuf)>, PathBuf)> {
    let mut cmd = cargo(["test", "--no-run", "--workspace", "--message-format=json"]);
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test binaries failed");
    }
    let mut found = Vec::new();
    let mut inspector = None;
    for message in Message::parse_stream(out.stdout.as_slice()) {
        let Message::CompilerArtifact(Artifact {
            executable: Some(exe),
            target,
            profile,
            package_id,
            ..
        }) = message.context("reading cargo's JSON messages")?
        else {
            continue;
        };
        if FENTRY_ONLY.contains(&target.name.as_str())
            || ONCE.contains(&target.name.as_str())
            || target.name == CROSS_MODE
        {
            found.push((target.name, exe.into_std_path_buf()));
        } else if target.name == "inspector"
            && !profile.test
            && target.is_bin()
            // A path package's id reads `path+file:///DIR/inspector#VERSION`.
            && package_id.repr.contains("/inspector#")
        {
            inspector = Some(exe.into_std_path_buf());
        }
    }
    if found.len() != FENTRY_ONLY.len() + ONCE.len() + 1 {
        bail!(
            "expected test binaries {FENTRY_ONLY:?}, {ONCE:?} and {CROSS_MODE}, cargo built {found:?}"
        );
    }
    let inspector = inspector.context("cargo built no `inspector` binary for the tests")?;
    Ok((found, inspector))
}

/// Shared libraries `ldd` names for `bin`.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect())
}

/// Copies `file` into `tree` at the same absolute path.
fn place(tree: &Path, file: &Path) -> Result<()> {
    let dst = tree.join(file.strip_prefix("/").unwrap_or(file));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::copy(file, &dst).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

/// [`place`] without the debug information: the guest unpacks the
/// initramfs into its memory, and the debug builds' DWARF alone would not
/// fit in it (and would take the emulator longer to unpack).
fn place_stripped(tree: &Path, file: &Path) -> Result<()> {
    let dst = tree.join(file.strip_prefix("/").unwrap_or(file));
    if let Some(parent) = dst.parent() {
        fs::create_dir_all(parent)?;
    }
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(file)
        .status()
        .context("running strip (binutils)")?;
    if !status.success() {
        bail!("strip --strip-debug {} failed", file.display());
    }
    Ok(())
}

/// The modules the tests need that Debian's kernels build as modules, by
/// path under `kernel/`, in load order: sock_diag for `inspector explain`,
/// veth for the scenarios that run between two hosts. Decompressed into
/// `tree/lib/modules/<version>/`.
const MODULES: &[&str] = &[
    "net/ipv4/inet_diag",
    "net/ipv4/tcp_diag",
    "net/ipv4/udp_diag",
    "drivers/net/veth",
];

/// A module's name: the last part of its path.
fn module_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn add_modules(tree: &Path, unpacked: &Path) -> Result<()> {
    for entry in fs::read_dir(unpacked.join("lib/modules"))? {
        let entry = entry?;
        let version = entry.file_name();
        let dst = tree.join("lib/modules").join(&version);
        fs::create_dir_all(&dst)?;
        for m in MODULES {
            let base = entry.path().join("kernel").join(format!("{m}.ko"));
            let out = dst.join(format!("{}.ko", module_name(m)));
            if base.exists() {
                fs::copy(&base, &out)?;
                continue;
            }
            let xz = base.with_extension("ko.xz");
            let data = Command::new("/bin/busybox")
                .args(["xz", "-dc"])
                .arg(&xz)
                .output()
                .with_context(|| format!("decompressing {}", xz.display()))?;
            if !data.status.success() {
                bail!("cannot decompress {}", xz.display());
            }
            fs::write(&out, data.stdout)?;
        }
    }
    Ok(())
}

fn initramfs(
    dir: &Path,
    inspector: &Path,
    tests: &[(String, PathBuf)],
    kernels: &[(String, PathBuf)],
) -> Result<PathBuf> {
    let tree = dir.join("initramfs");
    let _ = fs::remove_dir_all(&tree);
    for d in ["bin", "proc", "sys", "dev", "tmp", "root", "run/netns"] {
        fs::create_dir_all(tree.join(d))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox")).context("busybox-static")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            let _ = symlink("busybox", tree.join("bin").join(applet));
        }
    }
    for (package, _) in kernels {
        add_modules(&tree, &dir.join(package))?;
    }
    let mut binaries: Vec<&Path> = vec![inspector];
    binaries.extend(tests.iter().map(|(_, p)| p.as_path()));
    for b in &binaries {
        place_stripped(&tree, b)?;
        for lib in libraries(b)? {
            place(&tree, &lib)?;
        }
    }
    let run = |name: &str, path: &Path, mode: &str| {
        // The cross-mode check prints what it compared ("cross-mode: ...").
        let show = if name == CROSS_MODE {
            " --nocapture"
        } else {
            ""
        };
        let env = if name == "explain" {
            format!(" INSPECTOR_CASES={GUEST_EXPLAIN_CASES}")
        } else {
            String::new()
        };
        format!(
            "s=$(date +%s); INSPECTOR_MODE={mode}{env} {} --test-threads=1{show}; rc=$?; \
             echo \"INSPECTOR-RESULT {name} mode={mode} rc=$rc secs=$(( $(date +%s) - s ))\"\n",
            path.display()
        )
    };
    let mut runs = String::new();
    for (name, path) in tests
        .iter()
        .filter(|(n, _)| FENTRY_ONLY.contains(&n.as_str()))
    {
        runs.push_str(&run(name, path, "fentry"));
    }
    for (name, path) in tests.iter().filter(|(n, _)| n == CROSS_MODE) {
        runs.push_str(&run(name, path, "both"));
    }
    for (name, path) in tests.iter().filter(|(n, _)| ONCE.contains(&n.as_str())) {
        runs.push_str(&run(name, path, "auto"));
    }
    // No tmpfs over /tmp: the binaries sit at their build paths, which may
    // be under /tmp (the initramfs root is already in memory).
    let modules: Vec<&str> = MODULES.iter().map(|m| module_name(m)).collect();
    let modules = modules.join(" ");
    let init = format!(
        "#!/bin/sh\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
         mount -t bpf bpf /sys/fs/bpf 2>/dev/null\n\
         ip link set lo up\n\
         for m in {modules}; do insmod /lib/modules/$(uname -r)/$m.ko; done\n\
         export CI=true HOME=/root PATH=/bin RUST_BACKTRACE=1 INSPECTOR_REQUIRE_FENTRY=1\n\
         echo \"INSPECTOR-KERNEL $(uname -r)\"\n\
         {runs}\
         poweroff -f\n"
    );
    let init_path = tree.join("init");
    fs::write(&init_path, init)?;
    fs::set_permissions(&init_path, fs::Permissions::from_mode(0o755))?;
    let image = dir.join("initramfs.cpio.gz");
    let script = format!(
        "cd {} && find . | cpio -o -H newc --quiet | gzip -1 > {}",
        tree.display(),
        image.display()
    );
    step("pack initramfs", {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    })?;
    Ok(image)
}

struct GuestRun {
    kernel: String,
    results: Vec<String>,
    /// What the cross-mode check compared.
    notes: Vec<String>,
    ok: bool,
    secs: f64,
    log: PathBuf,
}

fn boot(vmlinuz: &Path, image: &Path, log: &Path) -> Result<GuestRun> {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            // One host thread for both vCPUs: with multi-threaded TCG a vCPU
            // can run a stale int3 left by the kernel's live text patching
            // (tracepoint detach) after the patch completed, and oops.
            "-accel",
            "tcg,thread=single",
            "-cpu",
            "max",
            "-m",
            "2G",
            "-smp",
            "2",
            "-nographic",
            "-no-reboot",
        ])
        .args(["-nic", "none", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(image)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > GUEST_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    let after = |l: &str, tag: &str| l.split_once(tag).map(|(_, rest)| rest.trim().to_owned());
    let kernel = text
        .lines()
        .find_map(|l| after(l, "INSPECTOR-KERNEL "))
        .unwrap_or_else(|| "did not boot".into());
    let results: Vec<String> = text
        .lines()
        .filter_map(|l| after(l, "INSPECTOR-RESULT "))
        .collect();
    let notes: Vec<String> = text
        .lines()
        .filter_map(|l| after(l, "cross-mode: "))
        .collect();
    let expected = FENTRY_ONLY.len() + 1 + ONCE.len();
    let ok = results.len() == expected && results.iter().all(|r| r.contains(" rc=0 "));
    Ok(GuestRun {
        kernel,
        results,
        notes,
        ok,
        secs: start.elapsed().as_secs_f64(),
        log: log.to_owned(),
    })
}

/// `kernel`: run just that kernel ("6.1", "6.12"); all of them when `None`.
pub fn vm_test(opts: Options) -> Result<()> {
    prepare(opts)?.run()
}

/// The guests, ready to boot: their kernels and the initramfs with this
/// build's test binaries.
pub struct Guests {
    kernels: Vec<(String, PathBuf)>,
    image: PathBuf,
    dir: PathBuf,
}

/// Fetches the kernels, builds (the test binaries are already there after
/// `cargo test --no-run`) and packs the initramfs.
pub fn prepare(opts: Options) -> Result<Guests> {
    let only = opts.kernel.as_deref();
    setup::setup()?;
    setup::install_packages(TOOLS)?;
    let dir = root().join("target/vm");
    fs::create_dir_all(&dir)?;
    let packages: Vec<String> = [
        ("6.1", newest(r"^linux-image-6\.1\.0-[0-9]+-amd64$")?),
        (
            "6.12",
            newest(r"^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$")?,
        ),
    ]
    .into_iter()
    .filter(|(v, _)| only.is_none_or(|o| o == *v))
    .map(|(_, p)| p)
    .collect();
    if packages.is_empty() {
        bail!(
            "no kernel {} in the matrix (6.1, 6.12)",
            only.unwrap_or_default()
        );
    }
    let kernels: Vec<(String, PathBuf)> = packages
        .iter()
        .map(|p| Ok((p.clone(), kernel(&dir, p)?)))
        .collect::<Result<_>>()?;
    let (tests, inspector) = test_binaries()?;
    let image = initramfs(&dir, &inspector, &tests, &kernels)?;
    Ok(Guests {
        kernels,
        image,
        dir,
    })
}

impl Guests {
    /// Boots every guest, side by side, and fails unless each passed.
    pub fn run(self) -> Result<()> {
        let Guests {
            kernels,
            image,
            dir,
        } = self;
        run_guests(&kernels, &image, &dir)
    }
}

fn run_guests(kernels: &[(String, PathBuf)], image: &Path, dir: &Path) -> Result<()> {
    // The guests run side by side: each emulator is one host thread
    // (`tcg,thread=single`), so two guests fill the two cores of these
    // machines without slowing each other much.
    let booted: Vec<Result<GuestRun>> = std::thread::scope(|s| {
        let handles: Vec<_> = kernels
            .iter()
            .map(|(package, vmlinuz)| {
                println!("vm-test: booting {package}");
                let log = dir.join(format!("{package}.log"));
                s.spawn(move || boot(vmlinuz, image, &log))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a guest thread panicked")))
            })
            .collect()
    });
    let mut runs = Vec::new();
    for ((package, _), run) in kernels.iter().zip(booted) {
        let run = run?;
        println!(
            "vm-test: kernel {} ({package}): {} in {:.0} s (boot + tests): {}",
            run.kernel,
            if run.ok { "passed" } else { "FAILED" },
            run.secs,
            run.results.join("; ")
        );
        for n in &run.notes {
            println!("vm-test:   cross-mode: {n}");
        }
        runs.push(run);
    }
    let failed: Vec<&GuestRun> = runs.iter().filter(|r| !r.ok).collect();
    for r in &failed {
        println!("---- guest log {} ----", r.log.display());
        let text = fs::read_to_string(&r.log).unwrap_or_default();
        let _ = std::io::stdout().write_all(text.as_bytes());
    }
    if !failed.is_empty() {
        bail!("{} of {} guests failed", failed.len(), runs.len());
    }
    Ok(())
}
