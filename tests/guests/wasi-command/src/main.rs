//! `wasi-command [ARGS...]`: a plain `wasi:cli` command, to show that `sockhost run` runs
//! components that know nothing of sockhost. Prints its arguments; exits with an error when
//! the first one is `fail` (wasi:cli 0.2 carries only success or failure, not a code).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("args={}", args.join(","));
    if args.first().is_some_and(|a| a == "fail") {
        std::process::exit(1);
    }
}
