//! `cdc_typed`: a typed Change Data Capture subscription for `Account`, printing what changed.
//!
//! ```text
//! cargo run --example cdc_typed
//! ```
//!
//! It starts the built-in emulator (no Salesforce account needed), makes a few changes to
//! Account records there (a create, an update, a cleared field, a compound address, a delete, a
//! gap event and one change that does not fit the type) and reads them back through
//! `subscription.typed::<ChangeEvent<Account>>()`, printing one line per changed field.
//!
//! What it shows:
//! - declare only the fields you care about, each as [`Field<V>`] with `#[serde(default)]`:
//!   *absent* means unchanged, *null* means cleared, a value is the new value;
//! - compound fields (`BillingAddress`) decode as [`Address`], with the changed parts only;
//! - gap events carry no field values: read the records the header names from the REST API;
//! - a change that does not fit your type is an `ErrorKind::Decode` item carrying the event
//!   (dead-letter it, then `ack()` it) and the stream goes on;
//! - notices (an outage being retried, a replay gap) go to `on_notice`, out of the way.
//!
//! Against an org, build the client with `Client::password(..)` (or another flow, see the
//! README) instead of `emulator.client_builder()`, and enable Change Data Capture for Account.

use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use sfstream::emulator::Emulator;
use sfstream::events::{Address, ChangeEvent, Field};
use sfstream::replay::ReplayOption;
use sfstream::{ErrorKind, NoticeExt};
use std::process::ExitCode;

const CHANNEL: &str = "/data/AccountChangeEvent";

/// The Account fields this program cares about; everything else in the event is ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Account {
    #[serde(default)]
    name: Field<String>,
    #[serde(default)]
    phone: Field<String>,
    #[serde(default)]
    website: Field<String>,
    #[serde(default)]
    annual_revenue: Field<f64>,
    #[serde(default)]
    billing_address: Field<Address>,
}

/// Changes made in the emulator, as a user editing Accounts would make them.
fn make_changes(emulator: &Emulator) -> usize {
    let id = "001xx000003DGb2AAG";
    let changes = [
        json!({"changeType": "CREATE", "Id": id, "Name": "Acme", "Phone": "(415) 555-0100"}),
        json!({"Id": id, "Phone": "(415) 555-0199", "AnnualRevenue": 2_500_000.0}),
        json!({"Id": id, "Website": null}),
        json!({"Id": id, "BillingAddress": {"City": "Paris", "Country": "France"}}),
        // Does not fit `Account`: AnnualRevenue must be a number.
        json!({"Id": id, "AnnualRevenue": "a lot"}),
        json!({"changeType": "DELETE", "Id": id}),
    ];
    for change in &changes {
        emulator.publish(CHANNEL, change.clone());
    }
    // Salesforce sends a gap event when it could not build a full change event.
    emulator.publish_gap(CHANNEL, "GAP_UPDATE", &[id]);
    changes.len() + 1
}

/// One line per field the change carries.
fn describe(change: &ChangeEvent<Account>) -> Vec<String> {
    let header = &change.header;
    let records = header.record_ids.join(",");
    let head = format!(
        "{} {} {records}",
        header.change_type.as_str(),
        header.entity_name
    );
    if header.change_type.is_gap() {
        return vec![format!(
            "{head}: no field values (a gap event); read the records from the REST API"
        )];
    }
    let Some(account) = &change.fields else {
        return vec![head];
    };
    let mut lines = Vec::new();
    let mut field = |name: &str, value: Option<String>, cleared: bool| {
        if cleared {
            lines.push(format!("{head}: {name} cleared"));
        } else if let Some(value) = value {
            lines.push(format!("{head}: {name} = {value}"));
        }
    };
    field(
        "Name",
        account.name.value().cloned(),
        account.name.is_null(),
    );
    field(
        "Phone",
        account.phone.value().cloned(),
        account.phone.is_null(),
    );
    field(
        "Website",
        account.website.value().cloned(),
        account.website.is_null(),
    );
    field(
        "AnnualRevenue",
        account.annual_revenue.value().map(|v| v.to_string()),
        account.annual_revenue.is_null(),
    );
    if let Some(address) = account.billing_address.value() {
        // Only the parts that changed are present.
        let parts = [("City", &address.city), ("Country", &address.country)];
        for (part, value) in parts {
            field(
                &format!("BillingAddress.{part}"),
                value.value().cloned(),
                value.is_null(),
            );
        }
    }
    if lines.is_empty() {
        lines.push(head);
    }
    lines
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::start().await?;
    let client = emulator
        .client_builder()
        .replay(ReplayOption::AllEvents)
        .connect()
        .await?;
    let expected = make_changes(&emulator);
    let mut changes = client
        .subscribe(CHANNEL)
        .await?
        .typed::<ChangeEvent<Account>>()
        .on_notice(|notice| eprintln!("cdc_typed: notice: {notice}"))
        .take(expected);
    while let Some(item) = changes.next().await {
        match item {
            Ok(change) => {
                for line in describe(&change) {
                    println!("{line}");
                }
                change.ack();
            }
            Err(e) if e.kind() == ErrorKind::Decode => {
                // A dead-letter queue would keep the event; here it is reported and skipped.
                eprintln!("cdc_typed: skipped: {e}");
                if let Some(event) = e.event() {
                    event.ack();
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    drop(changes);
    client.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cdc_typed: error: {e}");
            ExitCode::FAILURE
        }
    }
}
