use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, Permission, RoleRevokePermissionOptions, Txn, TxnOp,
};
use tonic::Code;

use crate::support::{Cairn, error_line, etcdctl, status, stdout};

const ROOT_PASSWORD: &str = "root-pw";
const ALICE_PASSWORD: &str = "Plain-Text-Secret-4711";

/// `etcdctl` as `user` (`name:password`).
fn as_user(cairn: &Cairn, user: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--user", user];
    all.extend_from_slice(args);
    etcdctl(cairn, &all)
}

#[test]
fn etcdctl_user_flows_work_as_with_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    let root = format!("root:{ROOT_PASSWORD}");
    let alice = format!("alice:{ALICE_PASSWORD}");

    assert_eq!(
        stdout(&etcdctl(&cairn, &["user", "add", "root", &format!("--new-user-password={ROOT_PASSWORD}")])),
        "User root created\n"
    );
    // etcdctl answers `root user does not have root role` by creating and granting it.
    assert_eq!(stdout(&etcdctl(&cairn, &["auth", "enable"])), "Authentication Enabled\n");
    assert_eq!(
        stdout(&etcdctl(&cairn, &["--user", &root, "user", "get", "root"])),
        "User: root\nRoles: root\n"
    );

    // Anonymous access is refused; root may do everything.
    assert_eq!(error_line(&etcdctl(&cairn, &["put", "a", "1"])), "Error: etcdserver: user name is empty");
    assert_eq!(error_line(&etcdctl(&cairn, &["get", "a"])), "Error: etcdserver: user name is empty");
    assert_eq!(stdout(&as_user(&cairn, &root, &["put", "a", "1"])), "OK\n");
    assert_eq!(stdout(&as_user(&cairn, &root, &["get", "a"])), "a\n1\n");

    // Alice holds read-write on the prefix /app/.
    let new_user = format!("--new-user-password={ALICE_PASSWORD}");
    assert_eq!(stdout(&as_user(&cairn, &root, &["user", "add", "alice", &new_user])), "User alice created\n");
    assert_eq!(stdout(&as_user(&cairn, &root, &["role", "add", "app"])), "Role app created\n");
    let grant = ["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"];
    assert_eq!(stdout(&as_user(&cairn, &root, &grant)), "Role app updated\n");
    assert_eq!(
        stdout(&as_user(&cairn, &root, &["user", "grant-role", "alice", "app"])),
        "Role app is granted to user alice\n"
    );
    assert_eq!(
        stdout(&as_user(&cairn, &root, &["role", "get", "app"])),
        "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\nKV Write:\n\t[/app/, /app0) (prefix /app/)\n"
    );

    let denied = "Error: etcdserver: permission denied";
    assert_eq!(stdout(&as_user(&cairn, &alice, &["put", "/app/x", "1"])), "OK\n");
    assert_eq!(stdout(&as_user(&cairn, &alice, &["get", "/app/x", "--print-value-only"])), "1\n");
    assert_eq!(stdout(&as_user(&cairn, &alice, &["get", "--prefix", "/app/", "--keys-only"])), "/app/x\n\n");
    assert_eq!(error_line(&as_user(&cairn, &alice, &["put", "/other", "1"])), denied);
    assert_eq!(error_line(&as_user(&cairn, &alice, &["get", "a"])), denied);
    assert_eq!(error_line(&as_user(&cairn, &alice, &["del", "a"])), denied);
    assert_eq!(
        error_line(&as_user(&cairn, &alice, &["get", "--prefix", "/"])),
        denied,
        "a range past her prefix"
    );
    assert_eq!(stdout(&as_user(&cairn, &alice, &["del", "/app/x"])), "1\n");
    let txn_outside = "value(\"a\") = \"1\"\n\nput /app/y 1\n\n\n";
    let output = crate::support::etcdctl_with_input(&cairn, &["--user", &alice, "txn"], Some(txn_outside));
    assert_eq!(error_line(&output), denied, "a compare outside her grant");

    // A wrong password, and admin calls by a non-root user.
    assert_eq!(
        error_line(&as_user(&cairn, "alice:wrong", &["get", "/app/x"])),
        "Error: etcdserver: authentication failed, invalid user ID or password"
    );
    assert_eq!(error_line(&as_user(&cairn, &alice, &["user", "list"])), denied);
    assert_eq!(error_line(&as_user(&cairn, &alice, &["role", "add", "mine"])), denied);
    assert_eq!(error_line(&as_user(&cairn, &alice, &["auth", "disable"])), denied);
    assert_eq!(stdout(&as_user(&cairn, &root, &["user", "list"])), "alice\nroot\n");
    assert_eq!(
        error_line(&as_user(&cairn, &root, &["user", "delete", "root"])),
        "Error: etcdserver: invalid auth management"
    );

    // Auth survives a restart.
    let cairn = cairn.kill_and_restart();
    assert_eq!(error_line(&etcdctl(&cairn, &["get", "a"])), "Error: etcdserver: user name is empty");
    assert_eq!(stdout(&as_user(&cairn, &alice, &["put", "/app/z", "2"])), "OK\n");

    assert_eq!(stdout(&as_user(&cairn, &root, &["auth", "disable"])), "Authentication Disabled\n");
    assert_eq!(stdout(&etcdctl(&cairn, &["put", "a", "anonymous again"])), "OK\n");
}

/// Sets up root and alice (read-write on /app/) through `root_client`, enables auth.
async fn set_up_users(cairn: &Cairn) {
    let mut client = cairn.client().await;
    client.user_add("root", ROOT_PASSWORD, None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.user_add("alice", ALICE_PASSWORD, None).await.unwrap();
    client.role_add("app").await.unwrap();
    client.role_grant_permission("app", Permission::read_write("/app/").with_prefix()).await.unwrap();
    client.user_grant_role("alice", "app").await.unwrap();
    client.auth_enable().await.unwrap();
}

async fn connect_as(cairn: &Cairn, user: &str, password: &str) -> Result<Client, etcd_client::Error> {
    Client::connect([cairn.endpoint()], Some(ConnectOptions::new().with_user(user, password))).await
}

/// The permission matrix with the `etcd-client` crate, for a server started with `args`.
async fn permission_matrix(args: &[&str], revoked: (Code, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let arg_strings: Vec<String> =
        args.iter().map(|arg| arg.replace("{dir}", &dir.path().display().to_string())).collect();
    let arg_refs: Vec<&str> = arg_strings.iter().map(String::as_str).collect();
    let cairn = Cairn::start(&dir.path().join("data"), &arg_refs);
    set_up_users(&cairn).await;
    let denied = (Code::PermissionDenied, "etcdserver: permission denied".to_owned());

    let mut anonymous = cairn.client().await;
    let refused = anonymous.put("a", "1", None).await.unwrap_err();
    assert_eq!(status(refused), (Code::InvalidArgument, "etcdserver: user name is empty".into()));

    let mut root = connect_as(&cairn, "root", ROOT_PASSWORD).await.unwrap();
    root.put("a", "1", None).await.unwrap();
    assert_eq!(root.get("a", None).await.unwrap().kvs()[0].value(), b"1");

    let mut alice = connect_as(&cairn, "alice", ALICE_PASSWORD).await.unwrap();
    alice.put("/app/k", "v", None).await.unwrap();
    assert_eq!(alice.get("/app/k", None).await.unwrap().kvs()[0].value(), b"v");
    assert_eq!(status(alice.put("b", "1", None).await.unwrap_err()), denied);
    assert_eq!(status(alice.get("a", None).await.unwrap_err()), denied);
    assert_eq!(status(alice.delete("a", None).await.unwrap_err()), denied);
    let inside = Txn::new()
        .when([Compare::version("/app/k", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("/app/t", "1", None)]);
    assert!(alice.txn(inside).await.unwrap().succeeded());
    let compare_outside = Txn::new()
        .when([Compare::version("a", CompareOp::Greater, 0)])
        .and_then([TxnOp::put("/app/t", "2", None)]);
    assert_eq!(status(alice.txn(compare_outside).await.unwrap_err()), denied);
    let else_outside =
        Txn::new().and_then([TxnOp::put("/app/t", "3", None)]).or_else([TxnOp::delete("a", None)]);
    assert_eq!(status(alice.txn(else_outside).await.unwrap_err()), denied, "both branches are checked");
    assert_eq!(status(alice.user_list().await.unwrap_err()), denied, "admin calls need root");

    let Err(wrong) = connect_as(&cairn, "alice", "wrong").await else { panic!("a wrong password connected") };
    assert_eq!(
        status(wrong),
        (Code::InvalidArgument, "etcdserver: authentication failed, invalid user ID or password".into())
    );

    // Revoking the grant takes effect at once for the connected client.
    let options = RoleRevokePermissionOptions::new().with_range_end("/app0");
    root.role_revoke_permission("app", "/app/", Some(options)).await.unwrap();
    let (code, message) = status(alice.put("/app/k", "w", None).await.unwrap_err());
    assert_eq!((code, message.as_str()), revoked);

    root.auth_disable().await.unwrap();
    anonymous.put("a", "2", None).await.unwrap();
}

#[tokio::test]
async fn permission_matrix_with_simple_tokens() {
    permission_matrix(&[], (Code::PermissionDenied, "etcdserver: permission denied")).await;
}

#[tokio::test]
async fn permission_matrix_with_jwt_tokens() {
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("jwt-secret");
    std::fs::write(&secret, "a shared secret for HS256 tokens").unwrap();
    let spec = format!("--auth-token=jwt,sign-method=HS256,priv-key={},ttl=10m", secret.display());
    // A JWT carries the auth revision it was issued at: after the revocation it is stale.
    permission_matrix(&[&spec], (Code::InvalidArgument, "etcdserver: revision of auth store is old")).await;
}

#[tokio::test]
async fn no_plain_password_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cairn = Cairn::start(dir.path(), &[]);
    set_up_users(&cairn).await;
    let mut root = connect_as(&cairn, "root", ROOT_PASSWORD).await.unwrap();
    let changed = "Another-Plain-Secret-0815";
    root.user_change_password("alice", changed).await.unwrap();
    connect_as(&cairn, "alice", changed).await.unwrap();
    // Stop cleanly so that everything is flushed, then search every file.
    assert!(cairn.terminate().success());
    let mut files = Vec::new();
    let mut pending = vec![dir.path().to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    assert!(!files.is_empty());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        for secret in [ALICE_PASSWORD, changed, ROOT_PASSWORD] {
            let found = bytes.windows(secret.len()).any(|window| window == secret.as_bytes());
            assert!(!found, "{} holds a plain password", file.display());
        }
    }
}
