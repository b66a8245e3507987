//! The `bkp` binary: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match bkp::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                bkp::exit::USAGE as u8
            } else {
                0
            });
        }
    };
    match bkp::run(cli) {
        Ok(()) => ExitCode::from(bkp::exit::SUCCESS as u8),
        Err(e) => {
            // A closed stdout (`bkp list | head`) is not a failure worth a message.
            if bkp::ui::is_stdout_closed(&e) {
                return ExitCode::from(bkp::exit::SUCCESS as u8);
            }
            bkp::ui::log(bkp::ui::Priority::Error, &format!("bkp: error: {e:#}"));
            ExitCode::from(bkp::exit::exit_code(&e) as u8)
        }
    }
}
