//! `cargo xtask e2e-etcd`: etcd's own end-to-end suite, run against `cairn`.
//!
//! Debian's `golang-etcd-server-dev` ships etcd 3.4's `tests/e2e` with its fixtures and
//! every dependency in GOPATH form, so `golang-go` builds it offline. Its framework starts
//! `<bin-dir>/etcd` with etcd's flags and `<bin-dir>/etcdctl`; here `etcd` is a link to
//! `cairn` (or, with `--etcd PATH`, to any other server, to make the kept list).
//!
//! Each test runs in its own invocation of the test binary, one at a time (the suite
//! uses fixed ports), with a deadline. Every process a test started carries a marker in
//! its environment and is killed by pid when the test ends, so one hang cannot stop or
//! disturb the rest.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where Debian's package puts the suite's sources (GOPATH form).
const GOCODE: &str = "/usr/share/gocode";
/// The suite's Go package.
const PACKAGE: &str = "go.etcd.io/etcd/tests/e2e";
/// The tests this task runs by default: every `TestCtlV3*` test.
const DEFAULT_PATTERN: &str = "^TestCtlV3";
/// The kept list: every test that passes against Debian's etcd on this machine kind,
/// which CI runs against Cairn.
const KEPT: &str = "xtask/e2e-etcd.kept";
/// How long one test may take. The slowest kept test takes about 15 s against etcd.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The environment variable that marks every process a test starts.
const MARKER: &str = "CAIRN_E2E_RUN";

struct Options {
    pattern: Option<String>,
    etcd: Option<PathBuf>,
    timeout: Duration,
    write_kept: bool,
}

/// `cargo xtask e2e-etcd [PATTERN] [--etcd PATH] [--timeout SECS] [--write-kept]`.
pub(crate) fn run(args: Vec<String>) -> anyhow::Result<()> {
    let options = parse(args)?;
    let root = crate::project_root();
    let work = root.join("target").join("e2e-etcd");
    let suite = build_suite(&work)?;
    let server = match &options.etcd {
        Some(path) => path.canonicalize().with_context(|| format!("no server at {}", path.display()))?,
        None => {
            crate::run(crate::cargo().args(["build", "--quiet", "-p", "cairn-server", "--bin", "cairn"]))?;
            root.join("target").join("debug").join("cairn")
        }
    };
    let bin = work.join("bin");
    link_binaries(&bin, &server)?;

    let tests: Vec<String> = match &options.pattern {
        Some(pattern) => list(&suite, pattern)?,
        None if options.write_kept => list(&suite, DEFAULT_PATTERN)?,
        None => kept(&root)?,
    };
    if tests.is_empty() {
        bail!("no test matches");
    }
    eprintln!("running {} etcd e2e tests against {}", tests.len(), server.display());
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let started = Instant::now();
    let mut failed = Vec::new();
    let mut passed = Vec::new();
    for (n, test) in tests.iter().enumerate() {
        let outcome = run_one(&suite, &bin, &work, &logs, test, n, options.timeout)?;
        eprintln!("{:<5} {test} ({:.1} s)", outcome.verdict(), outcome.took.as_secs_f64());
        if outcome.passed() {
            passed.push(test.clone());
        } else {
            failed.push(format!("{test}: {} (log: {})", outcome.verdict(), outcome.log.display()));
        }
    }
    eprintln!(
        "{} passed, {} failed, in {:.0} s",
        passed.len(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if options.write_kept {
        write_kept(&root, &server, &passed)?;
    }
    if !failed.is_empty() && !options.write_kept {
        bail!("{} etcd e2e tests failed:\n  {}", failed.len(), failed.join("\n  "));
    }
    Ok(())
}

fn parse(args: Vec<String>) -> anyhow::Result<Options> {
    let mut options = Options { pattern: None, etcd: None, timeout: DEFAULT_TIMEOUT, write_kept: false };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--etcd" => options.etcd = Some(args.next().context("--etcd needs a path")?.into()),
            "--timeout" => {
                let secs: u64 = args.next().context("--timeout needs seconds")?.parse()?;
                options.timeout = Duration::from_secs(secs);
            }
            "--write-kept" => options.write_kept = true,
            flag if flag.starts_with("--") => bail!("unknown flag `{flag}`"),
            _ if options.pattern.is_some() => bail!("one test pattern at most, got `{arg}` too"),
            _ => options.pattern = Some(arg),
        }
    }
    Ok(options)
}

/// Builds the suite's test binary once; rebuilt only when Debian's package changes.
fn build_suite(work: &Path) -> anyhow::Result<PathBuf> {
    let sources = Path::new(GOCODE).join("src").join(PACKAGE);
    if !sources.is_dir() {
        bail!(
            "etcd's e2e sources are missing ({}): apt-get install golang-go golang-etcd-server-dev",
            sources.display()
        );
    }
    let suite = work.join("e2e.test");
    let built = std::fs::metadata(&suite).and_then(|m| m.modified()).ok();
    let changed = std::fs::metadata(&sources)?.modified()?;
    if built.is_some_and(|built| built >= changed) {
        return Ok(suite);
    }
    std::fs::create_dir_all(work)?;
    eprintln!("building etcd's e2e suite from {}", sources.display());
    crate::run(
        Command::new("go")
            .args(["test", "-c", "-o"])
            .arg(&suite)
            .arg(PACKAGE)
            .env("GO111MODULE", "off")
            .env("GOPATH", format!("{}:{GOCODE}", work.join("gopath").display()))
            .env("GOCACHE", work.join("gocache"))
            .env("GOFLAGS", ""),
    )
    .context("cannot build etcd's e2e suite (is golang-go installed?)")?;
    Ok(suite)
}

/// `bin/etcd` is the server under test, `bin/etcdctl` Debian's etcdctl 3.4.
fn link_binaries(bin: &Path, server: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(bin)?;
    let etcdctl = Path::new("/usr/bin/etcdctl");
    if !etcdctl.exists() {
        bail!("etcdctl is missing: apt-get install etcd-client");
    }
    for (name, target) in [("etcd", server), ("etcdctl", etcdctl)] {
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

/// The suite's tests whose names match `pattern` (a Go regular expression).
fn list(suite: &Path, pattern: &str) -> anyhow::Result<Vec<String>> {
    let output = Command::new(suite).args(["-test.list", pattern]).output()?;
    if !output.status.success() {
        bail!("{} -test.list failed: {}", suite.display(), String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?
        .lines()
        .filter(|line| line.starts_with("Test"))
        .map(str::to_owned)
        .collect())
}

/// The tests of the kept list that run: one test name per line, `#` starts a
/// comment, and a line `- TestName # why` names a test that passes against etcd but
/// not yet against Cairn, which does not run.
fn kept(root: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(root.join(KEPT))
        .with_context(|| format!("cannot read the kept list {KEPT}"))?;
    Ok(parse_kept(&text))
}

fn parse_kept(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty() && !line.starts_with('-'))
        .map(str::to_owned)
        .collect()
}

/// Rewrites the kept list with the tests that passed, keeping its header comments
/// and the `- TestName # why` lines of tests that still pass.
fn write_kept(root: &Path, server: &Path, passed: &[String]) -> anyhow::Result<()> {
    let path = root.join(KEPT);
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let header: String =
        old.lines().take_while(|line| line.starts_with('#')).map(|line| format!("{line}\n")).collect();
    let waiting = |test: &str| {
        old.lines()
            .find(|line| line.strip_prefix('-').and_then(|rest| rest.split_whitespace().next()) == Some(test))
    };
    let sorted: BTreeSet<&String> = passed.iter().collect();
    let body: String =
        sorted.into_iter().map(|test| format!("{}\n", waiting(test).unwrap_or(test))).collect();
    std::fs::write(&path, format!("{header}{body}"))?;
    eprintln!("wrote {} tests that pass against {} to {KEPT}", passed.len(), server.display());
    Ok(())
}

struct Outcome {
    /// `Some(true)` passed, `Some(false)` failed, `None` ran out of time.
    passed: Option<bool>,
    took: Duration,
    log: PathBuf,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.passed == Some(true)
    }

    fn verdict(&self) -> &'static str {
        match self.passed {
            Some(true) => "PASS",
            Some(false) => "FAIL",
            None => "HUNG",
        }
    }
}

/// Runs one test in a fresh working directory, then kills whatever it left running.
fn run_one(
    suite: &Path,
    bin: &Path,
    work: &Path,
    logs: &Path,
    test: &str,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    // The suite names its JWT keys `../../integration/fixtures/…`, relative to its
    // own directory in etcd's tree: run it from such a directory.
    let tree = work.join("tree");
    let cwd = tree.join("tests").join("e2e");
    std::fs::create_dir_all(&cwd)?;
    let fixtures = tree.join("integration").join("fixtures");
    if !fixtures.exists() {
        std::fs::create_dir_all(tree.join("integration"))?;
        std::os::unix::fs::symlink(format!("{GOCODE}/src/go.etcd.io/etcd/integration/fixtures"), &fixtures)?;
    }
    // Data directories go to a fresh TMPDIR, removed afterwards.
    let dir = work.join("run").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let log = logs.join(format!("{test}.log"));
    let out = File::create(&log)?;
    let marker = format!("{}-{n}", std::process::id());
    let started = Instant::now();
    let mut child = Command::new(suite)
        .arg("-test.run")
        .arg(format!("^{test}$"))
        .arg("-test.v")
        .arg(format!("-test.timeout={}s", timeout.as_secs() + 30))
        .arg(format!("-bin-dir={}", bin.display()))
        .arg(format!("-cert-dir={GOCODE}/src/go.etcd.io/etcd/integration/fixtures"))
        .current_dir(&cwd)
        .env(MARKER, &marker)
        .env("TMPDIR", &dir)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", suite.display()))?;
    let passed = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status.success());
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    kill_marked(&marker);
    // The suite's TestMain fails a run whose tests all passed when a goroutine of the
    // test process itself (a reader of a finished child's terminal) has not yet
    // returned: a race in the harness, seen against etcd as against cairn. The
    // test's own verdict stands.
    let passed = match passed {
        Some(false) => {
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            Some(only_the_harness_leak_check_failed(&log_text, test))
        }
        other => other,
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome { passed, took, log })
}

fn only_the_harness_leak_check_failed(log: &str, test: &str) -> bool {
    log.contains(&format!("--- PASS: {test} "))
        && !log.contains("--- FAIL")
        && log.contains("Too many goroutines running after all test(s).")
}

/// Kills every process whose environment carries `marker`: the servers and clients a
/// test started in sessions of their own, which outlive a killed test binary.
fn kill_marked(marker: &str) {
    let needle = format!("{MARKER}={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
        if environ.split(|&byte| byte == 0).any(|var| var == needle.as_bytes()) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_list_skips_comments_and_blank_lines() {
        let text =
            "# header\nTestCtlV3Put\n\n  TestCtlV3Get # trailing\n#TestCtlV3Gone\n- TestCtlV3Wait # why\n";
        assert_eq!(parse_kept(text), ["TestCtlV3Put", "TestCtlV3Get"]);
    }

    #[test]
    fn a_passed_test_flagged_only_by_the_leak_check_passes() {
        let leak = "=== RUN   TestA\n--- PASS: TestA (0.37s)\nPASS\nToo many goroutines running after all test(s).\n";
        assert!(only_the_harness_leak_check_failed(leak, "TestA"));
        let failed =
            "=== RUN   TestA\n--- FAIL: TestA (0.37s)\nToo many goroutines running after all test(s).\n";
        assert!(!only_the_harness_leak_check_failed(failed, "TestA"));
        assert!(!only_the_harness_leak_check_failed("--- PASS: TestA (1s)\nFAIL\n", "TestA"));
    }

    #[test]
    fn flags_and_pattern() {
        let options = parse(vec!["Put".into(), "--etcd".into(), "/usr/bin/etcd".into()]).unwrap();
        assert_eq!(options.pattern.as_deref(), Some("Put"));
        assert_eq!(options.etcd.as_deref(), Some(Path::new("/usr/bin/etcd")));
        assert!(parse(vec!["a".into(), "b".into()]).is_err());
        assert!(parse(vec!["--bogus".into()]).is_err());
    }
}
