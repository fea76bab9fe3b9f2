use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lobsentry::cli::Cli::parse();
    match lobsentry::cli::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: our errors carry their causes in the message.
            eprintln!("lobsentry: error: {e}");
            ExitCode::FAILURE
        }
    }
}
