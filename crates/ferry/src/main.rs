fn main() {
    eprintln!("error: ferry is being built");
    std::process::exit(2);
}
