//! Runs the deterministic simulator over many seeds.
//!
//! `cargo run --release --example simulate -- --seeds 20000 --nodes 5`
fn main() -> std::process::ExitCode {
    trexlock_sim::main_with_args(std::env::args().skip(1))
}
