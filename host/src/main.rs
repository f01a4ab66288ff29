//! The `sockhost` command: `sockhost run` runs a component, `sockhost demo` runs the embedded
//! echo guests against each other.

mod demo;

use clap::{Parser, Subcommand};
use sockhost::policy::{AddressRule, NetworkPolicy};
use sockhost::runtime::{HandlerLimits, RunOptions, Runtime};
use sockhost::tls::TlsConfig;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Runs WebAssembly components with UWP-style sockets (StreamSocket, StreamSocketListener,
/// DatagramSocket) on native sockets.
#[derive(Parser)]
#[command(name = "sockhost", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a component (a sockhost:sockets client or service, or a wasi:cli command).
    Run(Box<RunArgs>),
    /// Runs the embedded TCP and UDP echo servers and clients against each other on loopback.
    Demo,
}

/// `sockhost run`.
#[derive(Parser)]
struct RunArgs {
    #[command(flatten)]
    network: NetworkArgs,
    #[command(flatten)]
    tls: TlsArgs,
    /// Take the listening sockets of systemd-style socket activation (LISTEN_FDS, named by
    /// LISTEN_FDNAMES) into the component's broker; automatic when LISTEN_PID is this process.
    #[arg(long)]
    listen_fds: bool,
    /// How many connection-received / message-received handlers may run at once.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_handlers: usize,
    /// Close a connection whose handler neither reads nor writes for this long; stop a
    /// datagram handler that runs this long.
    #[arg(long, value_name = "SECONDS", default_value_t = 300.0)]
    idle_timeout: f64,
    /// Stop a handler that has executed wasm for this long in all (a loop, say).
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    cpu_limit: f64,
    /// On SIGINT or SIGTERM, let running handlers finish for this long; a second signal
    /// stops at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    shutdown_grace: f64,
    /// The component to run.
    #[arg(value_name = "COMPONENT.wasm")]
    component: PathBuf,
    /// Arguments passed to the component.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<String>,
}

/// The network policy flags. Without any, the component may not bind or connect at all.
#[derive(Parser)]
struct NetworkArgs {
    /// Allow binding ADDR (an IP, a CIDR network or *) on PORTS (a port, LOW-HIGH or *).
    #[arg(long, value_name = "ADDR[:PORTS]")]
    allow_bind: Vec<AddressRule>,
    /// Allow connecting and sending to HOST (a name, an IP, a CIDR network or *) on PORTS.
    #[arg(long, value_name = "HOST[:PORTS]")]
    allow_connect: Vec<AddressRule>,
    /// Allow every bind and connect, and give wasi:sockets the host's network too.
    #[arg(long)]
    inherit_network: bool,
    /// Refuse loopback connections from one app to a port another app bound (UWP's network
    /// isolation).
    #[arg(long)]
    isolate_apps: bool,
}

/// The TLS flags: identities guests can name, and what to trust.
#[derive(Parser)]
struct TlsArgs {
    /// A certificate chain and private key (PEM) that guests select by NAME for a client
    /// certificate or a TLS listener; the key never enters the guest. Repeatable.
    #[arg(long, value_name = "NAME=CERT.pem,KEY.pem")]
    tls_identity: Vec<IdentityArg>,
    /// Trust the CA certificates of a PEM file, beside the system's roots. Repeatable.
    #[arg(long, value_name = "FILE")]
    tls_ca: Vec<PathBuf>,
    /// Refuse certificates revoked by the CRLs of a PEM file. Repeatable.
    #[arg(long, value_name = "FILE")]
    tls_crl: Vec<PathBuf>,
}

/// `NAME=CERT.pem,KEY.pem`.
#[derive(Clone)]
struct IdentityArg {
    name: String,
    cert: PathBuf,
    key: PathBuf,
}

impl std::str::FromStr for IdentityArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (name, files) = s.split_once('=').ok_or("expected NAME=CERT.pem,KEY.pem")?;
        let (cert, key) = files
            .split_once(',')
            .ok_or("expected NAME=CERT.pem,KEY.pem")?;
        if name.is_empty() || cert.is_empty() || key.is_empty() {
            return Err("expected NAME=CERT.pem,KEY.pem".into());
        }
        Ok(Self {
            name: name.into(),
            cert: cert.into(),
            key: key.into(),
        })
    }
}

impl TlsArgs {
    fn config(self) -> anyhow::Result<TlsConfig> {
        let mut tls = TlsConfig::default();
        for identity in self.tls_identity {
            tls.add_identity(&identity.name, &identity.cert, &identity.key)?;
        }
        for ca in self.tls_ca {
            tls.add_ca(&ca)?;
        }
        for crl in self.tls_crl {
            tls.add_crl(&crl)?;
        }
        Ok(tls)
    }
}

impl NetworkArgs {
    fn policy(self) -> NetworkPolicy {
        NetworkPolicy {
            inherit_network: self.inherit_network,
            allow_bind: self.allow_bind,
            allow_connect: self.allow_connect,
            isolate_apps: self.isolate_apps,
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("sockhost: missing a command: run or demo (see sockhost --help)");
            return ExitCode::from(2);
        }
        Err(e) => {
            // clap's message without its usage block and tips, on one line.
            let rendered = e.render().to_string();
            let message = rendered
                .lines()
                .take_while(|line| !line.starts_with("Usage:"))
                .filter(|line| !line.trim_start().starts_with("tip:"))
                .collect::<Vec<_>>()
                .join(" ");
            let message = one_line(message.trim_start_matches("error: "));
            eprintln!("sockhost: {message} (see sockhost --help)");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Inherited sockets are taken before anything else in the process opens a descriptor.
    let inherited = match &cli.command {
        Command::Run(args) => match sockhost::inherited_listeners(args.listen_fds) {
            Ok(listeners) => listeners
                .into_iter()
                .map(|(name, l)| (name, Arc::new(l)))
                .collect(),
            Err(e) => {
                eprintln!("sockhost: {e}");
                return ExitCode::FAILURE;
            }
        },
        Command::Demo => Vec::new(),
    };
    // Every connection is a file: a soft limit of 1,024 would cap a server far below
    // --max-handlers.
    if let Err(e) = sockhost::raise_open_file_limit() {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("sockhost: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args, inherited).await,
            Command::Demo => demo::run().await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sockhost: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Folds a message onto one line: every run of whitespace becomes one space.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

async fn run(
    args: RunArgs,
    inherited: Vec<(String, Arc<std::net::TcpListener>)>,
) -> anyhow::Result<ExitCode> {
    let tls = args.tls.config()?;
    let most = sockhost::runtime::MAX_HANDLERS;
    if args.max_handlers == 0 || args.max_handlers > most {
        anyhow::bail!("--max-handlers must be between 1 and {most}");
    }
    let limits = HandlerLimits {
        max_concurrent: args.max_handlers,
        idle_timeout: seconds(args.idle_timeout, "--idle-timeout")?,
        cpu_limit: seconds(args.cpu_limit, "--cpu-limit")?,
    };
    let runtime = Runtime::with_limits(args.network.policy(), limits)
        .map_err(anyhow::Error::from)?
        .with_tls(tls);
    let grace = seconds(args.shutdown_grace, "--shutdown-grace")?;
    let program = runtime
        .load_file(&args.component)
        .map_err(anyhow::Error::from)?;
    // Before the app starts, so a signal never finds the default (fatal) disposition.
    let mut signals = Signals::new()?;
    let mut options = RunOptions::new(args.args);
    options.inherited_listeners = inherited;
    let app = runtime.start(&program, options);
    let shutdown = app.shutdown_handle();
    let wait = app.wait();
    tokio::pin!(wait);
    let exit = tokio::select! {
        exit = &mut wait => exit,
        () = signals.next() => {
            eprintln!("sockhost: shutting down: finishing running handlers for up to {grace:?} (signal again to stop at once)");
            shutdown.shutdown(grace);
            tokio::select! {
                exit = &mut wait => exit,
                () = signals.next() => {
                    eprintln!("sockhost: stopped");
                    return Ok(ExitCode::from(130));
                }
            }
        }
    }
    .map_err(anyhow::Error::from)?;
    if let Some(trap) = exit.trap {
        let first = trap.lines().next().unwrap_or("trap");
        anyhow::bail!("{} trapped: {first}", args.component.display());
    }
    Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(1)))
}

/// A duration from a flag's seconds.
fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .map_err(|_| anyhow::anyhow!("{flag} must be a positive number of seconds"))
}

/// SIGINT and SIGTERM.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
