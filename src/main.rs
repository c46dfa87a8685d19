//! Thin entry point: parse the command line, hand over to the command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = sigloop::cli::Cli::parse();
    match sigloop::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sigloop: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
