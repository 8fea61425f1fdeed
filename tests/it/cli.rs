//! The `nexus` binary itself, run as an operator runs it, in a temporary
//! directory (no config files there: the embedded defaults, with the data
//! directory under it).

use std::{path::Path, process::Output};

fn nexus(dir: &Path, args: &[&str]) -> Output {
    nexus_with(dir, args, &[])
}

fn nexus_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    cmd.args(args).current_dir(dir).env("RUST_LOG", "warn");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NEXUS_")) {
        cmd.env_remove(key);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Read-only commands in a directory without a database refuse, say why,
/// and leave nothing behind.
#[test]
fn read_only_commands_refuse_to_invent_a_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["jobs", "status"][..],
        &["jobs", "dead"],
        &["migrate", "status"],
        &["license", "show", "--tenant", "acme"],
        &["webhooks", "status"],
    ] {
        let out = nexus(dir.path(), args);
        assert!(!out.status.success(), "{args:?} succeeded: {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.contains("no database at ./data/nexus.db"), "{args:?}: {err}");
        assert!(err.contains("nexus migrate"), "{args:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{args:?} created {left:?}");
    }
}

#[test]
fn after_migrate_up_the_read_only_commands_report_with_headers() {
    let dir = tempfile::tempdir().unwrap();
    let out = nexus(dir.path(), &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("database is up to date"));
    assert!(dir.path().join("data/nexus.db").exists());

    let out = nexus(dir.path(), &["migrate", "status"]);
    let text = stdout(&out);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("status"), "{text}");
    assert!(lines.all(|l| l.starts_with("Applied")), "{text}");

    let out = nexus(dir.path(), &["jobs", "status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("lane"), "{}", stdout(&out));
    let out = nexus(dir.path(), &["jobs", "dead"]);
    assert_eq!(stdout(&out).trim(), "no dead jobs");
    let out = nexus(dir.path(), &["webhooks", "status"]);
    assert_eq!(stdout(&out).trim(), "no webhook endpoints");
    let out = nexus(dir.path(), &["license", "show", "--tenant", "acme"]);
    assert!(stderr(&out).contains("no tenant `acme`"), "{}", stderr(&out));

    let out = nexus(dir.path(), &["tenant", "create", "--name", "Acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = nexus(dir.path(), &["license", "show", "--tenant", "acme"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"tier\""), "{}", stdout(&out));
}

/// A database whose migrations are not all applied is refused too, not
/// migrated behind the operator's back.
#[test]
fn an_unmigrated_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    assert!(nexus(dir.path(), &["migrate"]).status.success());
    assert!(nexus(dir.path(), &["migrate", "down"]).status.success());
    let out = nexus(dir.path(), &["jobs", "status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("1 pending migration(s): run `nexus migrate`"), "{}", stderr(&out));
    let out = nexus(dir.path(), &["migrate", "status"]);
    assert!(stdout(&out).lines().last().unwrap().starts_with("Pending"), "{}", stdout(&out));
}

#[test]
fn openapi_check_says_when_the_file_is_missing_or_stale() {
    let dir = tempfile::tempdir().unwrap();
    let out = nexus(dir.path(), &["openapi", "--check", "--output", "missing.json"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.json is missing"), "{}", stderr(&out));
    std::fs::write(dir.path().join("stale.json"), "{}").unwrap();
    let out = nexus(dir.path(), &["openapi", "--check", "--output", "stale.json"]);
    assert!(stderr(&out).contains("stale.json is out of date"), "{}", stderr(&out));
    assert!(nexus(dir.path(), &["openapi", "--output", "fresh.json"]).status.success());
    let out = nexus(dir.path(), &["openapi", "--check", "--output", "fresh.json"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Production without its secrets names all of them in one run.
#[test]
fn production_names_every_missing_setting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = nexus_with(dir.path(), &["jobs", "status"], &[("NEXUS_ENV", "production")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    for key in ["NEXUS_JWT_SECRET", "NEXUS_ENCRYPTION_KEY", "NEXUS_LICENSE_PUBLIC_KEY"] {
        assert!(err.contains(key), "{key} not named: {err}");
    }
}

/// The developer-machine recipe's variable is read as a list.
#[test]
fn allow_networks_is_read_from_the_environment_as_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("NEXUS_WEBHOOKS__ALLOW_NETWORKS", r#"["127.0.0.1", "not-a-net"]"#)];
    let out = nexus_with(dir.path(), &["openapi", "--output", "x.json"], &env);
    assert!(
        stderr(&out).contains(r#"invalid network in webhook allowlist: "not-a-net""#),
        "{}",
        stderr(&out)
    );
    let env = [("NEXUS_WEBHOOKS__ALLOW_NETWORKS", r#"["127.0.0.1"]"#)];
    assert!(nexus_with(dir.path(), &["openapi", "--output", "x.json"], &env).status.success());
}

/// An unreachable database is said once, in words, without its password.
#[test]
fn an_unreachable_database_is_reported_once_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = "postgres://root:hunter2secret@127.0.0.1:1/nexus";
    let out =
        nexus_with(dir.path(), &["serve"], &[("NEXUS_DATABASE_URL", url), ("NEXUS_BIND", "127.0.0.1:0")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("cannot connect to the database (postgres://root:***@127.0.0.1:1/nexus)"), "{err}");
    assert!(!err.contains("hunter2secret") && !err.contains(" at line "), "{err}");
    let line = err.lines().find(|l| l.starts_with("nexus: ")).unwrap();
    let cause = line.rsplit(": ").next().unwrap();
    assert_eq!(line.matches(cause).count(), 1, "said twice: {line}");
}

/// SIGTERM stops the server within `http.shutdown_timeout_secs`, cleanly,
/// though an event stream is still open.
#[test]
fn sigterm_stops_the_server_promptly_with_a_stream_open() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_nexus"));
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("NEXUS_")) {
        server.env_remove(key);
    }
    let mut server = server
        .arg("serve")
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .env("NEXUS_BIND", &bind)
        .env("NEXUS_HTTP__SHUTDOWN_TIMEOUT_SECS", "2")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("Nexus is running"), "{line}");

    let http = |request: String| {
        let mut stream = std::net::TcpStream::connect(&bind).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream
    };
    let body = r#"{"tenant_name":"Acme","tenant_slug":"acme","name":"Ada","email":"ada@example.com","password":"correct horse 42"}"#;
    let mut register = http(format!(
        "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let mut answer = String::new();
    register.read_to_string(&mut answer).unwrap();
    let token = answer.split(r#""token":""#).nth(1).and_then(|t| t.split('"').next()).unwrap().to_owned();
    let mut events =
        http(format!("GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"));
    let mut first = [0u8; 64];
    let n = events.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));

    let started = std::time::Instant::now();
    let killed =
        std::process::Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
