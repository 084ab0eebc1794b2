//! The README's main command: the `tail` example, run as a program (built by `cargo test`).

mod common;

use common::{fresh_dir, within};
use serde_json::Value;
use sfstream::emulator::Emulator;
use sfstream::replay::{FileStorage, ReplayMarker, ReplayStorage};
use std::path::PathBuf;
use std::process::Output;

fn tail_binary() -> PathBuf {
    common::example_binary("tail")
}

async fn tail(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(tail_binary());
    cmd.args(args).kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("SF_") || k.to_ascii_uppercase().ends_with("_PROXY") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

fn ids(out: &Output) -> Vec<i64> {
    lines(out)
        .iter()
        .map(|v| v["data"]["event"]["replayId"].as_i64().unwrap())
        .collect()
}

fn org(emu: &Emulator) -> Vec<(&'static str, String)> {
    vec![
        ("SF_INSTANCE_URL", emu.instance_url()),
        ("SF_ACCESS_TOKEN", emu.issue_token()),
        ("SF_API_VERSION", emu.api_version()),
    ]
}

#[tokio::test]
async fn with_no_credentials_it_streams_from_the_emulator() {
    within("tail on the emulator", async {
        let out = tail(&["--count", "3"], &[]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events = lines(&out);
        assert_eq!(events.len(), 3);
        for e in &events {
            assert!(e["channel"].as_str().unwrap().starts_with('/'));
            assert!(e["data"]["event"]["replayId"].is_i64(), "{e}");
        }
    })
    .await;
}

#[tokio::test]
async fn consecutive_runs_with_a_replay_file_print_consecutive_events() {
    within("tail resumes", async {
        let emu = Emulator::start().await.unwrap();
        for i in 0..30 {
            emu.publish("/event/Order__e", serde_json::json!({"n": i}));
        }
        let file = fresh_dir("resume").join("replay.json");
        let path = file.to_str().unwrap();
        let args = [
            "--count",
            "10",
            "--replay",
            "all",
            "--replay-file",
            path,
            "/event/Order__e",
        ];
        let mut all = Vec::new();
        for _ in 0..3 {
            let out = tail(&args, &org(&emu)).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            all.extend(ids(&out));
        }
        assert_eq!(all, (1..=30).collect::<Vec<_>>(), "no gap, no repeat");
        // The session was closed each time.
        assert_eq!(emu.stats().disconnects, 3);
    })
    .await;
}

#[tokio::test]
async fn an_expired_replay_file_falls_back_with_a_warning() {
    within("tail fallback", async {
        let emu = Emulator::start().await.unwrap();
        for i in 0..20 {
            emu.publish("/event/Order__e", serde_json::json!({"n": i}));
        }
        emu.expire_events("/event/Order__e", 10);
        let file = fresh_dir("fallback").join("replay.json");
        FileStorage::open(&file)
            .unwrap()
            .set("/event/Order__e", ReplayMarker::new(5, None))
            .await
            .unwrap();
        let path = file.to_str().unwrap();
        let args = [
            "--count",
            "3",
            "--replay-fallback",
            "all",
            "--replay-file",
            path,
            "/event/Order__e",
        ];
        let out = tail(&args, &org(&emu)).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(ids(&out), vec![11, 12, 13]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("replay gap") && stderr.contains("replay id 5"),
            "{stderr}"
        );
        // From a specific id:
        let out = tail(
            &["--count", "2", "--replay", "15", "/event/Order__e"],
            &org(&emu),
        )
        .await;
        assert_eq!(ids(&out), vec![16, 17]);
    })
    .await;
}

#[tokio::test]
async fn errors_are_one_line_on_stderr_and_a_failure_exit() {
    within("tail errors", async {
        let out = tail(&["--bogus"], &[]).await;
        assert!(!out.status.success());
        let env = vec![
            ("SF_INSTANCE_URL", "http://example.com".to_string()),
            ("SF_ACCESS_TOKEN", "secret-token-value".to_string()),
        ];
        let out = tail(&["/event/X__e"], &env).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("tail: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains("https"), "{stderr}");
        assert!(!stderr.contains("secret-token-value"));
        assert!(out.stdout.is_empty());
    })
    .await;
}

#[tokio::test]
async fn ctrl_c_closes_cleanly_with_a_disconnect() {
    within("tail ctrl-c", async {
        use tokio::io::AsyncBufReadExt;
        let emu = Emulator::start().await.unwrap();
        let mut cmd = tokio::process::Command::new(tail_binary());
        cmd.arg("/event/Order__e")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in org(&emu) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        emu.wait_until(|s| s.subscriptions.contains_key("/event/Order__e"))
            .await;
        emu.publish("/event/Order__e", serde_json::json!({"n": 1}));
        let line = lines.next_line().await.unwrap().unwrap();
        assert!(line.contains("\"replayId\":1"), "{line}");
        // Ctrl-C.
        common::interrupt(&child);
        let status = child.wait().await.unwrap();
        assert!(status.success(), "{status:?}");
        assert_eq!(emu.stats().disconnects, 1, "a /meta/disconnect was sent");
    })
    .await;
}

/// Whether the built `tail` knows the proxy variables. A target directory shared by several
/// checkouts can hold another checkout's build; outside CI such a test is skipped with a note.
async fn tail_knows_proxies() -> bool {
    let out = tail(&["--help"], &[]).await;
    if String::from_utf8_lossy(&out.stderr).contains("HTTPS_PROXY") {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "the tail example does not know the proxy variables"
    );
    eprintln!("skipped: target/*/examples/tail is another checkout's build; rebuild the examples");
    false
}

#[tokio::test]
async fn proxy_environment_variables_are_honoured() {
    if !tail_knows_proxies().await {
        return;
    }
    within("tail proxy env", async {
        // A closed port as the proxy: tail must try it and say so, for the token request too.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!(
            "http://svc:pw-SECRET@127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        drop(listener);
        let out = tail(&["--count", "1"], &[("HTTP_PROXY", proxy.clone())]).await;
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("services/oauth2/token"), "{stderr}");
        assert!(stderr.contains("is unreachable"), "{stderr}");
        assert!(!stderr.contains("pw-SECRET"), "{stderr}");
        // NO_PROXY lets the emulator on 127.0.0.1 be reached directly.
        let env = [
            ("http_proxy", proxy),
            ("NO_PROXY", "localhost,127.0.0.0/8".to_owned()),
        ];
        let out = tail(&["--count", "1"], &env).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(lines(&out).len(), 1);
    })
    .await;
}

/// With feature `native-roots`, the platform's store is trusted: on Linux that is
/// `SSL_CERT_FILE` when set, here the test CA.
#[cfg(feature = "native-roots")]
#[tokio::test]
async fn native_roots_trust_the_platform_store() {
    if !tail_knows_proxies().await {
        return;
    }
    within("tail native roots", async {
        let emu = Emulator::start().await.unwrap();
        emu.publish("/event/Order__e", serde_json::json!({"n": 1}));
        let front = common::front::front(emu.local_addr(), true).await;
        let mut env = org(&emu);
        env[0].1 = front.url(true);
        let ca = common::front::ca_path().display().to_string();
        let out = tail(
            &["--count", "1", "--replay", "all", "/event/Order__e"],
            &env,
        )
        .await;
        assert!(
            !out.status.success(),
            "the test CA is not trusted without SSL_CERT_FILE"
        );
        env.push(("SSL_CERT_FILE", ca));
        let out = tail(
            &["--count", "1", "--replay", "all", "/event/Order__e"],
            &env,
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(ids(&out), vec![1]);
    })
    .await;
}
