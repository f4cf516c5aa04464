//! The `kmsfs` binary: parses arguments and calls the library.

fn main() {
    std::process::exit(kmsfs::cli::run());
}
