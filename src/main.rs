//! The `modbot` binary: see `modbot --help`.

/// mimalloc instead of the system allocator: deciding a chat message allocates many small,
/// short-lived strings, and glibc's malloc spent a sixth of the stream path's time on them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    modbot::cli::main()
}
