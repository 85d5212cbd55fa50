use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
};

use crate::support::{Cairn, error_line, free_port, stdout};

/// A test CA, a server certificate for 127.0.0.1, client certificates for `root`,
/// `alice` and a revoked `mallory`, and a CRL, as PEM files in a temporary dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "cairn test CA");
        ca.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let write = |name: &str, params: CertificateParams| {
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
        };
        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        write("server", server);
        // Members present their peer certificate both ways.
        let mut peer = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        peer.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        write("peer", peer);
        for (serial, name) in [(2u64, "root"), (3, "alice"), (4, "mallory")] {
            let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
            client.distinguished_name.push(DnType::CommonName, name);
            client.serial_number = Some(SerialNumber::from(serial));
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            write(name, client);
        }
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(4u64),
                revocation_time: date_time_ymd(2021, 1, 1),
                reason_code: None,
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = crl.signed_by(&issuer).unwrap();
        std::fs::write(dir.path().join("crl.pem"), crl.pem().unwrap()).unwrap();
        // etcd's own fixtures hold a DER CRL (`revoke.crl`).
        std::fs::write(dir.path().join("crl.der"), crl.der()).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, flag: &str, name: &str) -> String {
        format!("--{flag}={}", self.path(name).display())
    }
}

/// `etcdctl` over TLS with `tls_args` (certificates), against `cairn`'s https URL.
fn etcdctl_tls(cairn: &Cairn, tls_args: &[String], args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", cairn.addr))
        .arg("--command-timeout=10s")
        .args(tls_args)
        .args(args)
        .output()
        .expect("etcdctl is installed")
}

fn start_tls(data: &Path, args: Vec<String>) -> Cairn {
    let addr = free_port();
    let mut all = vec![
        format!("--listen-client-urls=https://{addr}"),
        format!("--advertise-client-urls=https://{addr}"),
    ];
    all.extend(args);
    Cairn::start_on(addr, data, all)
}

#[test]
fn clients_reach_cairn_over_tls_and_plain_urls_may_sit_beside_it() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let (secure, plain) = (free_port(), free_port());
    let cairn = Cairn::start_on(
        secure,
        data.path(),
        vec![
            // Plain and TLS URLs may be mixed.
            format!("--listen-client-urls=https://{secure},http://{plain}"),
            pki.arg("cert-file", "server.pem"),
            pki.arg("key-file", "server-key.pem"),
        ],
    );
    let trust = [pki.arg("cacert", "ca.pem")];
    assert_eq!(stdout(&etcdctl_tls(&cairn, &trust, &["put", "secure", "yes"])), "OK\n");
    assert_eq!(stdout(&etcdctl_tls(&cairn, &trust, &["get", "secure", "--print-value-only"])), "yes\n");
    let over_plain = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints=http://{plain}"),
            "get".to_owned(),
            "secure".to_owned(),
            "--print-value-only".to_owned(),
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&over_plain), "yes\n");
    // A client that does not trust the CA refuses the server.
    let untrusting = ["--insecure-transport=false".to_owned()];
    assert!(!etcdctl_tls(&cairn, &untrusting, &["get", "secure"]).status.success());
}

#[test]
fn a_der_crl_is_read_and_enforced_and_a_file_that_is_no_crl_is_refused() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let server = |crl: &str| {
        vec![
            pki.arg("cert-file", "server.pem"),
            pki.arg("key-file", "server-key.pem"),
            pki.arg("trusted-ca-file", "ca.pem"),
            pki.arg("client-crl-file", crl),
            "--client-cert-auth".to_owned(),
        ]
    };
    let cairn = start_tls(data.path(), server("crl.der"));
    let as_user = |name: &str| {
        vec![
            pki.arg("cacert", "ca.pem"),
            pki.arg("cert", &format!("{name}.pem")),
            pki.arg("key", &format!("{name}-key.pem")),
        ]
    };
    assert_eq!(stdout(&etcdctl_tls(&cairn, &as_user("alice"), &["put", "k", "v"])), "OK\n");
    assert!(
        !etcdctl_tls(&cairn, &as_user("mallory"), &["put", "k", "v"]).status.success(),
        "a certificate revoked by a DER CRL"
    );
    drop(cairn);

    // A CRL file with no CRL in it is refused, never taken as "nothing revoked".
    let (status, stderr) = crate::support::start_refused(data.path(), &server("ca.pem"));
    assert!(!status.success());
    assert!(stderr.contains("client certificate verifier") || stderr.contains("CRL"), "{stderr}");
}

#[test]
fn client_certificates_are_required_verified_and_checked_against_the_crl() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let cairn = start_tls(
        data.path(),
        vec![
            pki.arg("cert-file", "server.pem"),
            pki.arg("key-file", "server-key.pem"),
            pki.arg("trusted-ca-file", "ca.pem"),
            pki.arg("client-crl-file", "crl.pem"),
            "--client-cert-auth".to_owned(),
        ],
    );
    let as_user = |name: &str| {
        vec![
            pki.arg("cacert", "ca.pem"),
            pki.arg("cert", &format!("{name}.pem")),
            pki.arg("key", &format!("{name}-key.pem")),
        ]
    };
    assert!(
        !etcdctl_tls(&cairn, &[pki.arg("cacert", "ca.pem")], &["put", "k", "v"]).status.success(),
        "no certificate"
    );
    assert_eq!(stdout(&etcdctl_tls(&cairn, &as_user("alice"), &["put", "k", "v"])), "OK\n");
    assert!(
        !etcdctl_tls(&cairn, &as_user("mallory"), &["put", "k", "v"]).status.success(),
        "a revoked certificate"
    );

    // With auth on, a certificate's common name is the user, as etcd does without a token.
    let root = as_user("root");
    assert_eq!(
        stdout(&etcdctl_tls(&cairn, &root, &["user", "add", "root", "--new-user-password=pw"])),
        "User root created\n"
    );
    assert_eq!(
        stdout(&etcdctl_tls(&cairn, &root, &["user", "add", "alice", "--new-user-password=pw"])),
        "User alice created\n"
    );
    assert_eq!(stdout(&etcdctl_tls(&cairn, &root, &["role", "add", "app"])), "Role app created\n");
    stdout(&etcdctl_tls(
        &cairn,
        &root,
        &["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"],
    ));
    stdout(&etcdctl_tls(&cairn, &root, &["user", "grant-role", "alice", "app"]));
    assert_eq!(stdout(&etcdctl_tls(&cairn, &root, &["auth", "enable"])), "Authentication Enabled\n");
    // Root's certificate makes admin calls without a password.
    assert_eq!(stdout(&etcdctl_tls(&cairn, &root, &["user", "list"])), "alice\nroot\n");
    // Alice's certificate gets alice's permissions.
    let alice = as_user("alice");
    assert_eq!(stdout(&etcdctl_tls(&cairn, &alice, &["put", "/app/x", "1"])), "OK\n");
    assert_eq!(
        error_line(&etcdctl_tls(&cairn, &alice, &["put", "/other", "1"])),
        "Error: etcdserver: permission denied"
    );
    assert_eq!(
        error_line(&etcdctl_tls(&cairn, &alice, &["user", "list"])),
        "Error: etcdserver: permission denied"
    );
}

#[test]
fn auto_tls_makes_its_own_certificate() {
    let data = tempfile::tempdir().unwrap();
    let cairn = start_tls(data.path(), vec!["--auto-tls".to_owned()]);
    let skip = ["--insecure-transport=false".to_owned(), "--insecure-skip-tls-verify".to_owned()];
    assert_eq!(stdout(&etcdctl_tls(&cairn, &skip, &["put", "auto", "tls"])), "OK\n");
    assert!(data.path().join("fixtures").join("client").join("cert.pem").is_file());
    // The key is the owner's alone, as etcd writes it.
    use std::os::unix::fs::PermissionsExt as _;
    let key = std::fs::metadata(data.path().join("fixtures").join("client").join("key.pem")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_missing_or_mismatched_key_is_refused_naming_the_file() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let run = |args: &[String]| {
        let output = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .arg(format!("--data-dir={}", data.path().display()))
            .arg(format!("--listen-client-urls=https://{}", free_port()))
            .args(args)
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let missing = run(&[pki.arg("cert-file", "server.pem"), "--key-file=/no/such/key.pem".to_owned()]);
    assert!(missing.contains("/no/such/key.pem"), "{missing}");
    let mismatched = run(&[pki.arg("cert-file", "server.pem"), pki.arg("key-file", "alice-key.pem")]);
    assert!(mismatched.contains("alice-key.pem") && mismatched.contains("does not fit"), "{mismatched}");
}

/// Three members whose peer URLs are `https`, member `n` also given `extra(its client
/// address)`.
fn three_members_with_tls_peers(data: &Path, extra: impl Fn(SocketAddr) -> Vec<String>) -> Vec<Cairn> {
    let clients: Vec<_> = (0..3).map(|_| free_port()).collect();
    let peers: Vec<_> = (0..3).map(|_| free_port()).collect();
    let initial: Vec<String> =
        peers.iter().enumerate().map(|(n, peer)| format!("m{n}=https://{peer}")).collect();
    (0..3)
        .map(|n| {
            let mut args = vec![
                format!("--name=m{n}"),
                format!("--listen-peer-urls=https://{}", peers[n]),
                format!("--initial-advertise-peer-urls=https://{}", peers[n]),
                format!("--initial-cluster={}", initial.join(",")),
            ];
            args.extend(extra(clients[n]));
            Cairn::start_on(clients[n], &data.join(format!("m{n}")), args)
        })
        .collect()
}

#[test]
fn a_three_member_cluster_with_client_and_peer_tls() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let members = three_members_with_tls_peers(data.path(), |client| {
        vec![
            format!("--listen-client-urls=https://{client}"),
            format!("--advertise-client-urls=https://{client}"),
            pki.arg("cert-file", "server.pem"),
            pki.arg("key-file", "server-key.pem"),
            pki.arg("peer-cert-file", "peer.pem"),
            pki.arg("peer-key-file", "peer-key.pem"),
            pki.arg("peer-trusted-ca-file", "ca.pem"),
            "--peer-client-cert-auth".to_owned(),
        ]
    });
    let trust = [pki.arg("cacert", "ca.pem")];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !etcdctl_tls(&members[0], &trust, &["put", "over", "tls"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the cluster did not form over peer TLS");
    }
    for member in &members {
        assert_eq!(stdout(&etcdctl_tls(member, &trust, &["get", "over", "--print-value-only"])), "tls\n");
    }
    let list = stdout(&etcdctl_tls(&members[1], &trust, &["member", "list"]));
    assert_eq!(list.matches(", started, ").count(), 3, "{list}");
    assert!(list.contains("https://"), "{list}");
}

#[tokio::test]
async fn the_etcd_client_crate_connects_with_a_client_certificate() {
    use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let cairn = start_tls(
        data.path(),
        vec![
            pki.arg("cert-file", "server.pem"),
            pki.arg("key-file", "server-key.pem"),
            pki.arg("trusted-ca-file", "ca.pem"),
            "--client-cert-auth".to_owned(),
        ],
    );
    let read = |name: &str| std::fs::read(pki.path(name)).unwrap();
    let tls = |client: Option<&str>| {
        let options = TlsOptions::new().ca_certificate(Certificate::from_pem(read("ca.pem")));
        match client {
            Some(name) => options
                .identity(Identity::from_pem(read(&format!("{name}.pem")), read(&format!("{name}-key.pem")))),
            None => options,
        }
    };
    let endpoint = format!("https://{}", cairn.addr);
    let mut client = etcd_client::Client::connect(
        [endpoint.clone()],
        Some(ConnectOptions::new().with_tls(tls(Some("alice")))),
    )
    .await
    .unwrap();
    client.put("via", "etcd-client", None).await.unwrap();
    assert_eq!(client.get("via", None).await.unwrap().kvs()[0].value(), b"etcd-client");
    // Without a certificate the handshake fails.
    let options =
        ConnectOptions::new().with_tls(tls(None)).with_connect_timeout(std::time::Duration::from_secs(2));
    let refused = match etcd_client::Client::connect([endpoint.clone()], Some(options)).await {
        Ok(mut client) => client.get("via", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate is refused");
}

#[test]
fn a_three_member_cluster_with_peer_auto_tls() {
    let data = tempfile::tempdir().unwrap();
    let members = three_members_with_tls_peers(data.path(), |_| vec!["--peer-auto-tls".to_owned()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !crate::support::etcdctl(&members[0], &["put", "auto", "peers"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the cluster did not form over peer auto TLS");
    }
    for member in &members {
        assert_eq!(
            stdout(&crate::support::etcdctl(member, &["get", "auto", "--print-value-only"])),
            "peers\n"
        );
    }
    assert!(data.path().join("m0").join("fixtures").join("peer").join("cert.pem").is_file());
}

/// One self-signed certificate with CN `root` as CA, server and client certificate at
/// once (etcd's `CommonName-root` fixture): a CA certificate as a client certificate
/// is trusted when it is itself a trusted root, as Go trusts it, and its common name
/// is the caller. An unrelated self-signed one is still refused.
#[test]
fn a_self_signed_root_certificate_serves_as_ca_server_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let self_signed = |name: &str, common_name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    };
    self_signed("root", "root");
    self_signed("stranger", "root");
    let file = |name: &str| dir.path().join(name).display().to_string();
    let cairn = start_tls(
        &dir.path().join("data"),
        vec![
            format!("--cert-file={}", file("root.pem")),
            format!("--key-file={}", file("root-key.pem")),
            format!("--trusted-ca-file={}", file("root.pem")),
            "--client-cert-auth".to_owned(),
        ],
    );
    let as_client = |name: &str| {
        vec![
            format!("--cacert={}", file("root.pem")),
            format!("--cert={}", file(&format!("{name}.pem"))),
            format!("--key={}", file(&format!("{name}-key.pem"))),
        ]
    };
    let root = as_client("root");
    let with_password_on_stdin = |args: &[&str]| {
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{}", cairn.addr))
            .args(&root)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(b"pw\n").unwrap();
        child.wait_with_output().unwrap()
    };
    stdout(&with_password_on_stdin(&["user", "add", "root", "--interactive=false"]));
    stdout(&etcdctl_tls(&cairn, &root, &["user", "grant-role", "root", "root"]));
    stdout(&etcdctl_tls(&cairn, &root, &["auth", "enable"]));
    // With auth on, the certificate's common name is the caller: root.
    assert_eq!(stdout(&etcdctl_tls(&cairn, &root, &["put", "k", "v"])).trim(), "OK");
    assert_eq!(stdout(&etcdctl_tls(&cairn, &root, &["user", "list"])).trim(), "root");
    // The same name on a certificate nobody trusts gets nowhere.
    let mut stranger = as_client("stranger");
    stranger.push("--dial-timeout=2s".to_owned());
    let refused = etcdctl_tls(&cairn, &stranger, &["--command-timeout=3s", "put", "k", "x"]);
    assert!(!refused.status.success());
    assert_eq!(stdout(&etcdctl_tls(&cairn, &root, &["get", "k", "--print-value-only"])).trim(), "v");
}
