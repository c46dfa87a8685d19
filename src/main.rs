//! Thin entry point: parse the command line, hand over to the command.

use clap::Parser;

/// mimalloc: the pipeline allocates many short-lived strings per event (tags, evidence, rows); glibc's
/// malloc spent a fifth of the core's time on them, mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
