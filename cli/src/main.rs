//! `anyk`: wiring only. Subcommands live one per module.

mod data;
mod export_cmd;
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
    /// Write a checkpoint's parameters as standard model files (safetensors; TorchScript).
    Export(Box<export_cmd::ExportArgs>),
    /// Train on this machine: one parameter server and n worker processes on loopback.
    Local(Box<local::LocalArgs>),
    /// Draw a run from its checkpoint: loss, step time, stragglers skipped, repairs (PNG or SVG).
    Plot(plot::PlotArgs),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Split a data set into block files (and a held-out test split).
    Split(data::SplitArgs),
    /// Copy one file (a model, say) from S3, http(s) or a path, written whole or not at all.
    Fetch(data::fetch::FetchArgs),
}

/// The exit status of `anyk data split` for bad data (the operator's staging Job fails at once
/// on it: `anyk_operator::children::BAD_DATA_EXIT`).
const BAD_DATA_EXIT: u8 = 2;

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
        } => data::run(&args)
            .map(|(manifest, outcome)| {
                if outcome == data::Outcome::AlreadyThere {
                    eprintln!("{} already holds this split: nothing written", args.out.display());
                }
                println!("{}", serde_json::to_string_pretty(&manifest).expect("json"))
            })
            .map_err(Into::into),
        Command::Data {
            command: DataCommand::Fetch(args),
        } => data::fetch::run(&args)
            .map(|bytes| eprintln!("{}: {bytes} bytes from {}", args.out.display(), args.input))
            .map_err(Into::into),
        Command::Local(args) => local::run(*args),
        Command::Export(args) => export_cmd::run(*args),
        Command::Plot(args) => plot::run(&args).map_err(Into::into),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // Bad data gets its own exit status: a staging Job does not retry what no retry fixes.
            let bad_data = matches!(
                err.downcast_ref::<data::SplitError>(),
                Some(data::SplitError::Invalid(_))
            );
            let mut source = err.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            if bad_data {
                return std::process::ExitCode::from(BAD_DATA_EXIT);
            }
            std::process::ExitCode::FAILURE
        }
    }
}
