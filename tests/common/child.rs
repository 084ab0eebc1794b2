//! Multi-process tests: a test binary starts itself again to run one ignored test as a child
//! process (a consumer to kill, stop and continue), and reads what it prints line by line.

use tokio::io::{AsyncBufReadExt, BufReader};

/// A child process running one ignored test of this test binary; killed when dropped.
pub struct TestChild {
    pub process: tokio::process::Child,
    /// Ends once the child's stdout closed (it exited), after its last line was passed on.
    pub reader: tokio::task::JoinHandle<()>,
}

/// Start this test binary again to run only the ignored test `test`, with the environment
/// variable `var` set to `config`; every line the child prints goes to `on_line`.
pub fn spawn(
    test: &str,
    var: &str,
    config: &str,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> TestChild {
    let mut process = tokio::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([test, "--exact", "--ignored", "--nocapture"])
        .env(var, config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the child process");
    let stdout = process.stdout.take().expect("stdout");
    let reader = tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            on_line(&line);
        }
    });
    TestChild { process, reader }
}

/// In the child: the `N` lines of the configuration its parent put in `var`; `None` when the
/// child test runs as an ordinary test (it then does nothing).
pub fn config<const N: usize>(var: &str) -> Option<[String; N]> {
    let config = std::env::var(var).ok()?;
    let lines: Vec<String> = config.split('\n').map(str::to_owned).collect();
    let count = lines.len();
    Some(
        lines
            .try_into()
            .unwrap_or_else(|_| panic!("{var}: expected {N} lines, got {count}")),
    )
}

impl TestChild {
    /// SIGKILL, then wait until every line it wrote before dying was passed on.
    pub async fn kill(mut self) {
        let _ = self.process.start_kill();
        let _ = self.process.wait().await;
        let _ = self.reader.await;
    }
}
