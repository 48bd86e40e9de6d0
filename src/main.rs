//! The `modbot` binary: see `modbot --help`.

fn main() -> std::process::ExitCode {
    modbot::cli::main()
}
