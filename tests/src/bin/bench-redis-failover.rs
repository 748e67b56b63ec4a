//! Benchmark: what a Redis Cluster failover costs the budget. Starts its own
//! six-node cluster (three primaries, each with a replica; ports 7301–7306,
//! `cluster-node-timeout` 1 s, data in a temporary directory), hammers one
//! budget from eight callers, and part-way through takes away the primary
//! that holds the budget's slot: killed (`SIGKILL`, a crash) or stopped
//! (`SIGSTOP`, a hung host; resumed later, when it rejoins as a replica).
//! Its replica is promoted; the window it inherits is what had been
//! replicated when the primary went.
//!
//! Printed per scenario: tokens granted, the most in any window on Redis's
//! clock against N (over N = the failover let through more than the budget),
//! and how long acquires failed (no call is made then: the budget fails
//! closed) until the promoted replica answered.
//!
//! `bench-redis-failover [--limit 400] [--window 4] [--seconds 20] [--at 6]`

use anyhow::{bail, ensure, Context, Result};
use signal9_e2e::flag;
use signal9_shared::keys::RedisKeys;
use signal9_shared::limiter::{redis_pool, Acquire, Budget, BudgetSize};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PORTS: [u16; 6] = [7301, 7302, 7303, 7304, 7305, 7306];

struct Cluster {
    nodes: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            // A stopped node must be resumed to die.
            let _ = Command::new("kill").args(["-CONT", &node.id().to_string()]).status();
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

fn cli(port: u16, args: &[&str]) -> Result<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .context("redis-cli")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn start_cluster() -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for port in PORTS {
        ensure!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} is taken"
        );
        let data = dir.path().join(port.to_string());
        std::fs::create_dir_all(&data)?;
        let node = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&data)
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server")?;
        nodes.push(node);
    }
    let cluster = Cluster { nodes, _dir: dir };
    std::thread::sleep(Duration::from_millis(500));
    let addresses: Vec<String> = PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .stdout(Stdio::null())
        .status()?;
    ensure!(created.success(), "redis-cli --cluster create failed");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = cli(PORTS[0], &["cluster", "info"])?.contains("cluster_state:ok");
        let replicas = PORTS
            .iter()
            .filter(|p| cli(**p, &["info", "replication"]).is_ok_and(|r| r.contains("master_link_status:up")))
            .count();
        if ok && replicas == 3 {
            return Ok(cluster);
        }
        ensure!(Instant::now() < deadline, "the cluster did not settle");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The port of the primary that holds `key`'s slot now.
fn primary_of(key: &str) -> Result<u16> {
    let slot: u32 = cli(PORTS[0], &["cluster", "keyslot", key])?.trim().parse()?;
    for line in cli(PORTS[0], &["cluster", "nodes"])?.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
            continue;
        }
        for range in &fields[8..] {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>()) {
                if (lo..=hi).contains(&slot) {
                    let port = fields[1].split(['@', ':']).nth(1).context("address")?;
                    return Ok(port.parse()?);
                }
            }
        }
    }
    bail!("no primary holds slot {slot}")
}

#[derive(Clone, Copy)]
enum Fault {
    Kill,
    Stop,
}

async fn scenario(fault: Fault, limit: u32, window: Duration, run: Duration, at: Duration) -> Result<()> {
    let cluster = start_cluster()?;
    let url = format!("redis-cluster://{}", PORTS.map(|p| format!("127.0.0.1:{p}")).join(","));
    let namespace = format!("failover{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let key = RedisKeys::new(&namespace).budget_window("data");
    let victim = primary_of(&key)?;
    let pid = cluster.nodes[PORTS.iter().position(|p| *p == victim).context("victim")?].id();
    let size = BudgetSize {
        limit,
        window,
        margin: Duration::ZERO,
    };
    let budget = Arc::new(Budget::new(redis_pool(&url)?, &namespace, "data", size));
    let started = Instant::now();
    let callers: Vec<_> = (0..8)
        .map(|_| {
            let budget = Arc::clone(&budget);
            tokio::spawn(async move {
                let (mut grants, mut errors) = (Vec::new(), Vec::new());
                while started.elapsed() < run {
                    match budget.try_acquire().await {
                        Ok(Acquire::Granted { at_ms, .. }) => grants.push((at_ms, started.elapsed())),
                        Ok(Acquire::Wait { wait, .. }) => {
                            tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
                        }
                        Err(_) => {
                            errors.push(started.elapsed());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                (grants, errors)
            })
        })
        .collect();
    tokio::time::sleep(at).await;
    let signal = match fault {
        Fault::Kill => "-KILL",
        Fault::Stop => "-STOP",
    };
    Command::new("kill").args([signal, &pid.to_string()]).status()?;
    let faulted = started.elapsed();
    if let Fault::Stop = fault {
        // A hung primary comes back after its replica took over.
        tokio::time::sleep(Duration::from_secs(5)).await;
        Command::new("kill").args(["-CONT", &pid.to_string()]).status()?;
    }
    let (mut grants, mut errors) = (Vec::new(), Vec::new());
    for caller in callers {
        let (g, e) = caller.await?;
        grants.extend(g);
        errors.extend(e);
    }
    errors.sort_unstable();
    let promoted = primary_of(&key)?;
    grants.sort_unstable();
    let window_ms = i64::try_from(window.as_millis())?;
    let most = (0..grants.len())
        .map(|i| {
            grants[i..]
                .iter()
                .take_while(|(t, _)| *t < grants[i].0 + window_ms)
                .count()
        })
        .max()
        .unwrap_or(0);
    // From the first failed acquire to the first token after the last one.
    let outage = match (errors.first(), errors.last()) {
        (Some(first), Some(last)) => {
            let resumed = grants.iter().map(|(_, l)| *l).filter(|l| l > last).min().unwrap_or(run);
            resumed.saturating_sub(*first)
        }
        _ => Duration::ZERO,
    };
    let ideal = (run.as_secs_f64() / window.as_secs_f64()).ceil() as usize * limit as usize;
    println!(
        "signal9 redis-failover  fault {:<4}  primary :{victim} → :{promoted} at {:.1} s  limit {limit} per {:.0} s  run {:.0} s  granted {} (at most {ideal} possible)  most in any window {most} (over N by {})  Redis unreachable for the budget {:.2} s ({} failed acquires)",
        match fault {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
        },
        faulted.as_secs_f64(),
        window.as_secs_f64(),
        run.as_secs_f64(),
        grants.len(),
        most.saturating_sub(limit as usize),
        outage.as_secs_f64(),
        errors.len(),
    );
    ensure!(promoted != victim, "the replica was not promoted");
    drop(cluster);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let limit = flag("--limit", 400.0) as u32;
    let window = Duration::from_secs_f64(flag("--window", 4.0));
    let run = Duration::from_secs_f64(flag("--seconds", 20.0));
    let at = Duration::from_secs_f64(flag("--at", 6.0));
    for fault in [Fault::Kill, Fault::Stop] {
        scenario(fault, limit, window, run, at).await?;
    }
    Ok(())
}
