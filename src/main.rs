fn main() {
    if let Err(e) = fwdbench::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
