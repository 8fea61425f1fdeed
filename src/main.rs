use clap::Parser;

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
