//! The control socket's access rules over real sockets: a clear message when no daemon runs,
//! non-root peers refused, control-group members served, socket setup errors that name
//! their subject.
#![allow(clippy::unwrap_used)] // helpers of a test: a panic is the failure report

mod control_common;
use control_common::*;

#[test]
fn daemon_not_running_is_a_clear_message() {
    let missing = "/tmp/as-ctl-no-such-dir/control.sock";
    let out = Command::new(CTL)
        .args(["-s", missing, "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "supervisorctl: the agent-supervisor daemon is not running (no listener on {missing})\n"
        )
    );
    let out = Command::new(CTL)
        .arg("status")
        .env("AGENT_SUPERVISOR_SOCKET", missing)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(missing));
}

/// Runs `supervisorctl` as uid 65534 with primary group `gid` and no others.
fn ctl_as_nobody(srv: &Server, gid: u32, args: &[&str]) -> (i32, String) {
    let bin = srv.dir.join("supervisorctl");
    if !bin.exists() {
        std::fs::copy(CTL, &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(
        srv.socket.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups"])
        .arg(&bin)
        .arg("-s")
        .arg(&srv.socket)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn non_root_peers_are_refused() {
    if !agent_supervisor_tests::fixture::root_or_skip("non_root_peers_are_refused") {
        return;
    }
    let srv = Server::start("peer", None, quick());
    // Mode 0600: the kernel refuses the connection.
    let (code, out) = ctl_as_nobody(&srv, 65534, &["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("permission denied on"), "{out}");
    assert!(out.contains("run supervisorctl as root, or join the daemon's control group"));
    // Even when the file mode lets it in, SO_PEERCRED does not.
    std::fs::set_permissions(&srv.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, out) = ctl_as_nobody(&srv, 65534, &["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("permission denied: uid 65534 is not root"),
        "{out}"
    );
    assert!(out.contains("refused by the daemon"), "{out}");
    let (status, _) = srv.raw(b"GET /v1/version HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200, "root is still served");
}

#[test]
fn control_group_members_are_served() {
    if !agent_supervisor_tests::fixture::root_or_skip("control_group_members_are_served") {
        return;
    }
    let Ok(Some(group)) = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(65534)) else {
        eprintln!("SKIP control_group_members_are_served: no group with gid 65534");
        return;
    };
    let srv = Server::start("group", Some(&group.name), quick());
    let meta = std::fs::metadata(&srv.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 65534));
    let (code, out) = ctl_as_nobody(&srv, 65534, &["status", "AudioCapture"]);
    assert_eq!(code, 0, "a member of the control group is served: {out}");
    // Another group: the socket's mode keeps it out.
    let (code, out) = ctl_as_nobody(&srv, 1, &["status"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("permission denied"), "{out}");
}

fn serve_once(socket: &Path, group: Option<&str>) -> Result<(), ControlError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (tx, _rx) = mpsc::channel(1);
    rt.block_on(serve_control_with(
        socket,
        group.map(str::to_string),
        tx,
        PathBuf::from("/nonexistent"),
        ServerLimits::default(),
        cancel,
    ))
}

#[test]
fn socket_setup_errors_name_their_subject() {
    let dir = PathBuf::from(format!("/tmp/as-ctl-setup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");

    let err = serve_once(&socket, Some("no-such-group-xyz")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "control_group \"no-such-group-xyz\" does not exist on this machine"
    );
    // A stale socket (nobody listening) is replaced; the socket is removed on shutdown.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    serve_once(&socket, None).unwrap();
    assert!(!socket.exists());
    // A live one is not.
    let live = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let err = serve_once(&socket, None).unwrap_err();
    assert!(
        err.to_string().contains("another daemon already answers"),
        "{err}"
    );
    drop(live);
    std::fs::remove_file(&socket).unwrap();
    std::fs::write(&socket, "not a socket").unwrap();
    let err = serve_once(&socket, None).unwrap_err();
    assert!(err.to_string().contains("is not a socket"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
