//! `signal9-worker`: consumes jobs from RabbitMQ, calls Alpaca under the
//! global budget, and writes results. The queue consumer is not built yet;
//! until it is, this binary says so and exits non-zero rather than pretend.

fn main() -> std::process::ExitCode {
    eprintln!("signal9-worker: the queue consumer is not part of this build yet; use `signal9-producer ingest-direct`");
    std::process::ExitCode::FAILURE
}
