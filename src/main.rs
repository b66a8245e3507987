//! The `bkp` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match bkp::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::from(0);
            }
            // A mistyped restore_command must stop recovery: PostgreSQL reads
            // exit 2 as "not in the archive" and would end recovery there.
            let args: Vec<String> = std::env::args().skip(1).collect();
            let fetch = args
                .iter()
                .position(|a| a == "wal")
                .is_some_and(|i| args.get(i + 1).is_some_and(|a| a == "fetch"));
            return ExitCode::from(if fetch {
                200 + bkp::exit::USAGE as u8
            } else {
                bkp::exit::USAGE as u8
            });
        }
    };
    let json = cli.global.json;
    // `wal fetch` answers PostgreSQL, which reads its exit code its own way.
    let fetch_pgdata = match &cli.command {
        bkp::cli::Command::Wal(bkp::cli::WalCommand::Fetch { pgdata, .. }) => Some(pgdata.clone()),
        _ => None,
    };
    bkp::interrupt::install();
    match bkp::run(cli) {
        Ok(()) => ExitCode::from(bkp::exit::SUCCESS as u8),
        Err(e) => {
            // A closed stdout (`bkp list | head`) is not a failure worth a message.
            if bkp::ui::is_stdout_closed(&e) {
                return ExitCode::from(bkp::exit::SUCCESS as u8);
            }
            let mut code = bkp::exit::exit_code(&e);
            if code == bkp::exit::INTERRUPTED {
                // 128 + the signal that ended the run (143 for SIGTERM).
                code = bkp::interrupt::received().map_or(code, bkp::interrupt::exit_code);
            }
            if let Some(pgdata) = &fetch_pgdata {
                code = bkp::commands::wal::fetch_exit_code(code, pgdata);
            }
            if json {
                // One JSON object on stderr, the same keys every time.
                let body = serde_json::json!({
                    "schema": "bkp.error/1",
                    "exit_code": code,
                    "class": bkp::exit::name(code),
                    "message": format!("{e:#}"),
                    "warnings": bkp::ui::warnings(),
                });
                bkp::ui::log(bkp::ui::Priority::Error, &body.to_string());
            } else {
                bkp::ui::log(bkp::ui::Priority::Error, &format!("bkp: error: {e:#}"));
            }
            ExitCode::from(code as u8)
        }
    }
}
