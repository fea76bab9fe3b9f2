use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = lobsentry::cmd::Cli::parse();
    match lobsentry::cmd::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: our errors carry their causes in the message.
            eprintln!("lobsentry: error: {e}");
            ExitCode::FAILURE
        }
    }
}
