//! Builds every guest component for wasm32-wasip2 into OUT_DIR and writes `guests.rs`, which
//! names each one's path (and, for the example guests, embeds its bytes). This is wasmtime's
//! test-programs pattern: a plain `cargo test` or `cargo run` builds the guests it runs.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The example guests, embedded in the `sockhost` binary for `sockhost demo`.
const EXAMPLES: &[&str] = &[
    "tcp-echo-server",
    "tcp-echo-client",
    "udp-echo-server",
    "udp-echo-client",
    "tls-echo-server",
    "tls-echo-client",
    "batch-sender",
];
/// Guests that only the tests run.
const TEST_GUESTS: &[&str] = &[
    "socket-probe",
    "handler-probe",
    "broker-probe",
    "wasi-command",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir.join("guests");

    for watched in [
        "wit",
        "guest-examples",
        "tests/guests",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target_dir)
        // Flags meant for the host build must not reach the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_PROFILE_RELEASE_DEBUG")
        // Under `cargo clippy` the guests are linted as workspace members; build them plainly.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER");
    for guest in EXAMPLES.iter().chain(TEST_GUESTS) {
        cmd.args(["-p", guest]);
    }
    eprintln!("running: {cmd:?}");
    let status = cmd
        .status()
        .expect("failed to run cargo to build the guests");
    assert!(
        status.success(),
        "building the guest components failed: {status}"
    );

    let mut generated = String::new();
    for guest in EXAMPLES.iter().chain(TEST_GUESTS) {
        let path = wasm_path(&target_dir, guest);
        assert!(path.exists(), "{} was not built", path.display());
        let constant = guest.to_uppercase().replace('-', "_");
        writeln!(generated, "/// The path of the `{guest}` component.").unwrap();
        writeln!(
            generated,
            "pub const {constant}: &str = {:?};",
            path.display().to_string()
        )
        .unwrap();
        if EXAMPLES.contains(guest) {
            writeln!(generated, "/// The bytes of the `{guest}` component.").unwrap();
            writeln!(
                generated,
                "pub static {constant}_BYTES: &[u8] = include_bytes!({:?});",
                path.display().to_string()
            )
            .unwrap();
        }
    }
    std::fs::write(out_dir.join("guests.rs"), generated).expect("write guests.rs");
}

fn wasm_path(target_dir: &Path, guest: &str) -> PathBuf {
    target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", guest.replace('-', "_")))
}
