//! `anyk`: wiring only. Subcommands live one per module.

mod data_split;
mod local;
mod plan_cmd;
mod plot;

use clap::{Parser, Subcommand};

/// anyk: straggler-proof, self-healing distributed training.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute a block layout (any k of n workers cover all blocks) and print it.
    Plan(plan_cmd::PlanArgs),
    /// Data set tools.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Train on this machine: one parameter server and n worker processes on loopback.
    Local(Box<local::LocalArgs>),
    /// Draw a run from its checkpoint: loss, step time, stragglers skipped, repairs (PNG or SVG).
    Plot(plot::PlotArgs),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Split a data set into block files (and a held-out test split).
    Split(data_split::SplitArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ANYK_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Plan(args) => plan_cmd::run(&args),
        Command::Data {
            command: DataCommand::Split(args),
        } => data_split::run(&args)
            .map(|manifest| println!("{}", serde_json::to_string_pretty(&manifest).expect("json")))
            .map_err(Into::into),
        Command::Local(args) => local::run(*args),
        Command::Plot(args) => plot::run(&args).map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}
