use clap::Parser;

/// mimalloc rather than the system's malloc: a request's many small
/// allocations, freed on the thread that made them, cost less CPU
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match nexus::cli::run(nexus::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("nexus: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
