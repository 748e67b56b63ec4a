//! Benchmark: browsing a large dead-letter queue.
//!
//! `bench-dlq --letters 1000000` fills a fresh namespace's dead-letter
//! queue with that many letters (confirmed, in batches), then times three
//! operator commands against it, each as its own process, and reads the
//! command's peak RSS (VmHWM) while it runs:
//! - `dlq list` (its first page of 100);
//! - `dlq show ID` of the last letter (a scan of the whole queue);
//! - `dlq list --symbol NONE` (a filtered scan that matches nothing).
//!
//! Browsing takes at most what the queue held when it began and keeps only
//! a delivery tag, so the first page does not depend on the queue's length
//! and memory does not grow with it.

use anyhow::{ensure, Result};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::BasicProperties;
use std::time::{Duration, Instant};

use signal9_e2e::{flag, queue_depth, Stack};

/// Runs a producer command, polling its peak RSS until it exits.
fn timed(stack: &Stack, args: &[&str]) -> Result<(f64, f64, String)> {
    let started = Instant::now();
    let mut command = std::process::Command::new(signal9_e2e::bin_dir().join("signal9-producer"));
    command
        .args(args)
        .envs(stack.env())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn()?;
    let pid = child.id();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let watcher = {
        let peak = peak.clone();
        std::thread::spawn(move || loop {
            let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
                return;
            };
            let kb = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok());
            match kb {
                Some(kb) => peak.fetch_max(kb, std::sync::atomic::Ordering::Relaxed),
                None => return,
            };
            std::thread::sleep(Duration::from_millis(20));
        })
    };
    let output = child.wait_with_output()?;
    let _ = watcher.join();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .to_owned();
    Ok((
        started.elapsed().as_secs_f64(),
        peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0,
        last,
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let letters: u64 = flag("--letters", 1_000_000);
    let mut stack = Stack::start(&[])?;
    let topology = stack.topology();
    let connection = signal9_e2e::amqp_connection().await?;
    let channel = connection.create_channel().await?;
    topology.declare(&channel).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let started = Instant::now();
    let mut published = 0u64;
    while published < letters {
        let batch = (letters - published).min(1_000);
        let mut confirms = Vec::with_capacity(batch as usize);
        for i in published..published + batch {
            let body = format!(r#"{{"id":"letter-{i:08}","kind":"status-check","payload":{{"symbol":"MSFT"}}}}"#);
            confirms.push(
                channel
                    .basic_publish(
                        topology.dead_exchange().as_str().into(),
                        "status-check".into(),
                        BasicPublishOptions::default(),
                        body.as_bytes(),
                        BasicProperties::default().with_message_id(format!("letter-{i:08}").into()),
                    )
                    .await?,
            );
        }
        for confirm in confirms {
            confirm.await?;
        }
        published += batch;
    }
    let dead = topology.dead_letter_queue();
    ensure!(
        u64::from(queue_depth(&dead).await?) == letters,
        "not every letter landed"
    );
    println!(
        "bench-dlq: filled {dead} with {letters} letters in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let last_id = format!("letter-{:08}", letters - 1);
    for (what, args) in [
        ("list, first page", vec!["dlq", "list"]),
        ("show, last letter", vec!["dlq", "show", last_id.as_str()]),
        ("list --symbol NONE", vec!["dlq", "list", "--symbol", "NONE"]),
    ] {
        let (secs, rss, last) = timed(&stack, &args)?;
        println!("bench-dlq: {what}: {secs:.2} s, peak RSS {rss:.0} MB ({last})");
    }
    ensure!(
        u64::from(queue_depth(&dead).await?) == letters,
        "browsing changed the queue"
    );
    stack.cleanup().await;
    Ok(())
}
