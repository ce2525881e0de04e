use std::process::ExitCode;

use clap::Parser;
use outpost::cli::{Cli, Command};
use outpost::runtime::sealed_exe;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any thread: the agent and supervisors never run from the host's binary file.
    let exe = match cli.command {
        Command::Run(_) | Command::Supervise { .. } => Some(sealed_exe::ensure()),
        _ => None,
    };
    // The agent logs what it does; one-shot commands print only their results and problems.
    let default_level = match cli.command {
        Command::Run(_) | Command::Supervise { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format(log_line)
        .init();
    let unsealed = "running from the host's binary file, which a container allowed to trace \
                    could write through /proc/PID/exe";
    match exe {
        Some(Ok(sealed_exe::ExeKind::HostFile)) => {
            log::warn!("{unsealed}: the re-exec did not help")
        }
        // Costs the binary's size in memory: say so.
        Some(Ok(sealed_exe::ExeKind::SealedMemfd)) => {
            log::info!("running from a sealed in-memory copy of the binary (no overlayfs)")
        }
        Some(Ok(_)) => {}
        Some(Err(e)) => log::warn!("{unsealed}: no sealed copy could be made: {e}"),
        None => {}
    }
    // First, while the process has one thread: supervisors are forked from this copy of it.
    let fork_server = match &cli.command {
        Command::Run(_) => {
            outpost::agent::memory::configure_at_start();
            outpost::runtime::ForkServer::start()
                .map_err(|e| log::warn!("{e}: supervisors will be exec'd"))
                .ok()
        }
        _ => None,
    };
    match cli.command {
        Command::Supervise { pod_dir, gc } => supervise(&pod_dir, gc),
        command => run(command, fork_server),
    }
}

/// env_logger's own line, `[2026-01-02T03:04:05.678Z INFO  outpost::agent] text`, with the
/// time printed by k8s-openapi's jiff: env_logger's timestamps would link a second jiff.
fn log_line(buf: &mut env_logger::fmt::Formatter, record: &log::Record) -> std::io::Result<()> {
    use std::io::Write;
    let now = outpost::format::now();
    let style = buf.default_level_style(record.level());
    let (level, target) = (record.level(), record.target());
    writeln!(buf, "[{now:.3} {style}{level:<5}{style:#} {target}] {}", record.args())
}

/// Kept out of `main` (and the supervisor's stack): the agent's and the clients' state make
/// this frame ~100 KB, all of it touched by stack probes.
#[inline(never)]
fn run(command: Command, fork_server: Option<outpost::runtime::ForkServer>) -> ExitCode {
    match command {
        Command::Version => {
            println!("{}", outpost::cli::version());
            ExitCode::SUCCESS
        }
        Command::Validate { paths } => {
            let report = outpost::cli::validate(&paths);
            for e in &report.errors {
                eprintln!("{e}");
            }
            if report.errors.is_empty() {
                println!(
                    "{} files valid: {} pods, {} configmaps, {} secrets",
                    report.files, report.pods, report.config_maps, report.secrets
                );
                ExitCode::SUCCESS
            } else {
                eprintln!("{} errors in {} files", report.errors.len(), report.files);
                ExitCode::FAILURE
            }
        }
        Command::Run(args) => match outpost::agent::run(args.into_config(), fork_server) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                log::error!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Image(args) => outpost::image::cli::run(&args),
        Command::Exec(args) => outpost::exec::run(&args),
        Command::Kubeconfig(args) => outpost::kubeconfig::run(&args),
        Command::Get(args) => outpost::client::run(|out| outpost::client::get(&args, out)),
        Command::Describe(args) => {
            outpost::client::run(|out| outpost::client::describe(&args, out))
        }
        Command::Logs(args) => outpost::client::run(|out| outpost::client::logs(&args, out)),
        Command::Events(args) => outpost::client::run(|out| outpost::client::events(&args, out)),
        Command::Top(args) => outpost::client::run(|out| outpost::client::top(&args, out)),
        Command::Rollout(args) => outpost::client::run(|out| outpost::client::rollout(&args, out)),
        Command::Supervise { pod_dir, gc } => supervise(&pod_dir, gc),
    }
}

/// The per-pod supervisor idles in here for the pod's lifetime: a small stack above it.
#[inline(never)]
fn supervise(pod_dir: &std::path::Path, gc: bool) -> ExitCode {
    ExitCode::from(outpost::runtime::supervisor::command(pod_dir, gc))
}
