use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = enrichd::cli::Cli::parse();
    if matches!(cli.command, enrichd::cli::Command::Run) {
        enrichd::telemetry::init_json();
    } else {
        enrichd::telemetry::init();
    }
    enrichd::cli::main(cli).await
}
