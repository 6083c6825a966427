use clap::Parser;
use videosdgx::cli::{Args, Command};

fn main() {
    let args = Args::parse();
    let level = match args.verbose.to_uppercase().as_str() {
        "DEBUG" => "debug",
        "WARNING" => "warn",
        "ERROR" | "CRITICAL" => "error",
        _ => "info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
    let result = match args.command.clone() {
        Some(Command::Run { workflow }) => videosdgx::run_cli::run(&args, &workflow),
        Some(Command::Convert { workflow }) => videosdgx::run_cli::convert(&args, &workflow),
        Some(Command::Inspect { file }) => videosdgx::runtime::inspect::inspect(&file).map(|v| {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        }),
        None => serve(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn serve(args: Args) -> anyhow::Result<()> {
    let state = videosdgx::server::build_state(args)?;
    actix_web::rt::System::new().block_on(videosdgx::server::serve(state))
}
