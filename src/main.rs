use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    enrichd::telemetry::init();
    enrichd::cli::main(enrichd::cli::Cli::parse()).await
}
