//! `benches/tail_cpu/run.sh`'s server: the emulator on loopback holding N retained platform
//! events on `/event/Order__e`, printing the variables `tail` reads (`SF_INSTANCE_URL`,
//! `SF_ACCESS_TOKEN`, `SF_API_VERSION`) as one line, then serving until stdin closes.

use sfstream::emulator::Emulator;
use tokio::io::AsyncReadExt;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let emu = Emulator::builder().retention_count(n).start().await?;
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1000);
        let fields: Vec<_> = (0..chunk)
            .map(|i| serde_json::json!({"Order_Number__c": format!("ORD-{:07}", n - left + i), "Amount__c": 10.5}))
            .collect();
        emu.push_prepared(&emu.prepare("/event/Order__e", &fields));
        left -= chunk;
    }
    println!(
        "SF_INSTANCE_URL={} SF_ACCESS_TOKEN={} SF_API_VERSION={}",
        emu.instance_url(),
        emu.issue_token(),
        emu.api_version()
    );
    // Until the script closes our stdin (or exits).
    let _ = tokio::io::stdin().read_to_end(&mut Vec::new()).await;
    Ok(())
}
