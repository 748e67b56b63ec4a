//! `dlq list|show|replay|purge`: the operator's view of the dead-letter
//! queue, printed. The browsing, replaying and purging are
//! [`signal9_shared::ops::dead_letters`], which the console uses too.

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use signal9_shared::ops::dead_letters::{browse, find, purge_matching, replay_matching, Filter, ReplayHow};
use signal9_shared::ops::Session;
use signal9_shared::settings::BrokerSettings;

/// The dead-letter commands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// A table of dead letters: id, kind, symbol, error class, attempts, last failure.
    List(ListArgs),
    /// One dead letter's body and headers.
    Show(ShowArgs),
    /// Publish matching dead letters back to their queues (attempts reset, id kept).
    Replay(ReplayArgs),
    /// Delete matching dead letters (needs --yes).
    Purge(PurgeArgs),
}

/// The page `dlq list` shows without `--max`.
const LIST_PAGE: usize = 100;

/// `dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    filter: Filter,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// `dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    /// The job id.
    id: String,
}

/// `dlq replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    filter: Filter,
    /// At most this many replays per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Show what would be replayed and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `dlq purge`.
#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    filter: Filter,
    /// Confirm the deletion.
    #[arg(long)]
    yes: bool,
}

async fn open(settings: &BrokerSettings) -> Result<Session> {
    Session::open(settings, "signal9-producer-dlq", false).await
}

/// Runs a dead-letter command.
pub async fn run(command: DlqCommand) -> Result<()> {
    match command {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Show(args) => show(args).await,
        DlqCommand::Replay(args) => replay(args).await,
        DlqCommand::Purge(args) => purge(args).await,
    }
}

async fn list(args: ListArgs) -> Result<()> {
    let Session {
        connection, topology, ..
    } = open(&args.broker).await?;
    let queue = topology.dead_letter_queue();
    let page = args.filter.max.unwrap_or(LIST_PAGE);
    if !args.json {
        println!(
            "{:<38} {:<13} {:<12} {:<10} {:>8}  {:<27} LAST ERROR",
            "ID", "KIND", "SYMBOL", "CLASS", "ATTEMPTS", "LAST FAILURE"
        );
    }
    let json = args.json;
    let mut shown = 0usize;
    // Each line is printed as it is read: nothing of a letter is kept.
    let listing = browse(&connection, &queue, &args.filter, page, false, |letter| {
        shown += 1;
        if json {
            println!("{}", serde_json::to_string(letter).unwrap_or_default());
        } else {
            let error: String = letter.last_error.chars().take(80).collect();
            println!(
                "{:<38} {:<13} {:<12} {:<10} {:>8}  {:<27} {}",
                letter.id, letter.kind, letter.symbol, letter.error_class, letter.attempts, letter.last_failure, error
            );
        }
    })
    .await?;
    if !args.json {
        let (read, total) = (listing.read, listing.total);
        let more = if shown == page && read < total {
            format!(" (the first {page} that match; --max N for more)")
        } else {
            String::new()
        };
        println!("{shown} shown of {total} dead letters in {queue}, {read} read{more}");
    }
    Ok(())
}
async fn show(args: ShowArgs) -> Result<()> {
    let Session {
        connection, topology, ..
    } = open(&args.broker).await?;
    let queue = topology.dead_letter_queue();
    let (found, read) = find(&connection, &queue, &args.id).await?;
    let Some(shown) = found else {
        bail!("no dead letter with id {:?} among the {read} in {queue}", args.id);
    };
    println!("routing key: {}", shown.letter.routing_key);
    for (name, value) in &shown.headers {
        println!("header {name}: {value}");
    }
    if shown.body_is_json {
        println!("body:\n{}", shown.body);
    } else {
        println!(
            "body ({} bytes, not JSON; first 4096 characters):\n{}",
            shown.body_bytes, shown.body
        );
    }
    Ok(())
}

async fn replay(args: ReplayArgs) -> Result<()> {
    let Session {
        connection,
        publisher,
        topology,
        ..
    } = open(&args.broker).await?;
    let bar = if args.dry_run {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} read {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = replay_matching(
        &connection,
        &publisher,
        &topology,
        &args.filter,
        ReplayHow {
            rate: args.rate,
            dry_run: args.dry_run,
            reply_to: None,
        },
        |read, total, replayed| {
            bar.set_length(total);
            bar.set_position(read);
            bar.set_message(format!("({replayed} replayed)"));
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!(e.to_string().replace("the rate", "--rate")))?;
    bar.finish();
    if args.dry_run {
        for line in &report.ids {
            println!("would replay {line}");
        }
        println!("dry run: {} would be replayed; nothing changed", report.replayed);
    } else {
        println!("replayed {} dead letters", report.replayed);
    }
    if let Some(error) = report.failure {
        bail!("replay stopped: {error}");
    }
    if !report.kept.is_empty() {
        for line in &report.kept {
            println!("  kept: {line}");
        }
        bail!("dead letters were kept: no job queue would take them (see `dlq show ID`)");
    }
    Ok(())
}

async fn purge(args: PurgeArgs) -> Result<()> {
    if !args.yes {
        bail!("purge deletes dead letters for good; add --yes to confirm (try `dlq list` with the same filters first)");
    }
    let Session {
        connection, topology, ..
    } = open(&args.broker).await?;
    let purged = purge_matching(&connection, &topology.dead_letter_queue(), &args.filter).await?;
    println!("purged {purged} dead letters");
    Ok(())
}
