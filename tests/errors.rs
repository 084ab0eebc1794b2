//! The error type composes: each cause once in a chain walk, no secret anywhere in it.

mod common;

use common::within;
use sfstream::auth::AccessToken;
use sfstream::{Client, ErrorKind};
use std::error::Error as _;
use std::time::Duration;

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_connection_names_each_cause_once_in_a_chain_walk() {
    within("refused", async {
        let url = format!("http://127.0.0.1:{}", closed_port());
        let token = "00Dxx!SECRET-ACCESS-TOKEN";
        let e = Client::builder(AccessToken::new(token, url.parse().unwrap()))
            // connect() retries a refused connection until this, then reports the last error.
            .connection_timeout(Some(Duration::from_millis(300)))
            .connect()
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transport, "{e:?}");
        assert!(e.is_transient());
        // Walk the chain: every level's own text must not repeat a level below it.
        let mut levels = vec![e.to_string()];
        let mut source = e.source();
        while let Some(s) = source {
            levels.push(s.to_string());
            source = s.source();
        }
        assert!(
            levels.concat().to_lowercase().contains("refused"),
            "the cause is named: {levels:?}"
        );
        for (i, level) in levels.iter().enumerate() {
            for below in &levels[i + 1..] {
                assert!(
                    !level.contains(below.as_str()),
                    "{level:?} repeats {below:?}"
                );
            }
        }
        let report = format!("{:#}", anyhow::Error::new(e.clone()));
        assert_eq!(report.matches("refused").count(), 1, "{report}");
        for level in &levels[1..] {
            assert_eq!(report.matches(level.as_str()).count(), 1, "{report}");
        }
        assert!(!format!("{report} {e:?}").contains("SECRET"), "{report}");
    })
    .await;
}
