//! `signal9-producer status`: one screen for an operator: every queue's
//! depth and consumers, the dead letters, the live workers (from their
//! heartbeats), the budgets' use in the current window, and the last sync
//! run. `--json` prints the same as one JSON object.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use signal9_shared::broker;
use signal9_shared::ops::status::{snapshot, QueueState, Snapshot};
use signal9_shared::settings::{BrokerSettings, BudgetSettings, StoreSettings};
use signal9_shared::workers;

/// Flags of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    budget: BudgetSettings,
    #[command(flatten)]
    store: StoreSettings,
    /// Print one JSON object instead of the screen.
    #[arg(long)]
    json: bool,
}

/// Gathers and prints the status.
pub async fn run(args: StatusArgs) -> Result<()> {
    let topology = args.broker.topology();
    let connection = broker::connect(&args.broker.amqp_url, "signal9-producer status")
        .await
        .context("connecting to RabbitMQ")?;
    let gate = signal9_shared::services::gate(&args.budget, &args.broker.namespace)?;
    let snap = snapshot(&connection, &topology, &gate, &args.broker.namespace).await;
    let _ = connection.close(200, "status".into()).await;
    let Snapshot {
        queues,
        retry_queues: retries,
        dead_letters: dead,
        workers: live,
        budgets,
    } = snap?;
    let last_run = match args.store.open().await {
        Ok(store) => match store.latest_run().await {
            Ok(Some(run)) => json!({
                "run_id": run.run_id,
                "status": run.status.as_str(),
                "started_at": run.started_at,
                "finished_at": run.finished_at,
                "pages_done": run.pages_done,
                "pages_total": run.pages_total,
                "result": run.result,
            }),
            Ok(None) => Value::Null,
            Err(error) => json!({"error": error.to_string()}),
        },
        Err(error) => json!({"error": error.to_string()}),
    };

    let status = json!({
        "namespace": args.broker.namespace,
        "queues": queues,
        "retry_queues": retries,
        "dead_letters": dead,
        "workers": live,
        "budgets": budgets,
        "last_sync_run": last_run,
        "store": args.store.describe(),
    });
    if args.json {
        println!("{status}");
    } else {
        print_screen(&status, &queues, &retries, &dead, &live);
    }
    Ok(())
}

fn count(n: Option<u32>) -> String {
    n.map_or_else(|| "missing".into(), |n| n.to_string())
}

fn print_screen(
    status: &Value,
    queues: &[QueueState],
    retries: &[QueueState],
    dead: &QueueState,
    live: &[workers::Heartbeat],
) {
    println!(
        "namespace {}   store {}",
        status["namespace"].as_str().unwrap_or(""),
        status["store"].as_str().unwrap_or("")
    );
    println!("\nQUEUE                                       READY  CONSUMERS");
    for q in queues.iter().chain(retries) {
        println!("{:<42} {:>6} {:>10}", q.name, count(q.messages), count(q.consumers));
    }
    println!("{:<42} {:>6}   (dead letters)", dead.name, count(dead.messages));

    println!("\nWORKERS ({} alive)", live.len());
    for w in live {
        let breakers: Vec<String> = w.breakers.iter().map(|(api, state)| format!("{api} {state}")).collect();
        println!(
            "  {} {}:{} v{} concurrency {} {} jobs {} breakers [{}] metrics {} (beat {})",
            w.id,
            w.host,
            w.pid,
            w.version,
            w.concurrency,
            if w.broker_connected {
                "connected"
            } else {
                "DISCONNECTED"
            },
            w.jobs_done,
            breakers.join(", "),
            w.metrics_addr.as_deref().unwrap_or("-"),
            w.beat_at.format("%H:%M:%SZ"),
        );
    }
    if live.is_empty() {
        println!(
            "  none: no worker has written a heartbeat in the last {} s",
            workers::BEAT_TTL.as_secs()
        );
    }

    println!("\nBUDGETS (current window, all processes)");
    if let Some(budgets) = status["budgets"].as_object() {
        for (api, b) in budgets {
            let paused = b["paused_for_secs"].as_f64().unwrap_or(0.0);
            println!(
                "  {api:<8} {} of {} per {} s{}",
                b["in_window"],
                b["limit"],
                b["window_secs"],
                if paused > 0.0 {
                    format!(", paused {paused:.1} s more")
                } else {
                    String::new()
                }
            );
        }
    }

    println!("\nLAST SYNC RUN");
    let run = &status["last_sync_run"];
    if run.is_null() {
        println!("  none yet");
    } else if let Some(error) = run["error"].as_str() {
        println!("  unavailable: {error}");
    } else {
        println!(
            "  {} {} pages {}/{} started {} finished {}",
            run["run_id"].as_str().unwrap_or(""),
            run["status"].as_str().unwrap_or(""),
            run["pages_done"],
            run["pages_total"],
            run["started_at"].as_str().unwrap_or("-"),
            run["finished_at"].as_str().unwrap_or("-"),
        );
        if let Some(result) = run["result"].as_object() {
            let figures: Vec<String> = result
                .iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("  {}", figures.join(", "));
        }
    }
}
