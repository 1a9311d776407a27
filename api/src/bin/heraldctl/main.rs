//! heraldctl: Herald's ops CLI. It talks to the HTTP API only (never to Postgres or Redis),
//! with the ops token, so it works against any deployment an operator can reach and sees
//! exactly what the API's contract promises.
//!
//! Exit codes, for scripts: 0 done; 1 the API refused or failed; 2 usage error (nothing was
//! sent); 3 the API could not be reached.

mod cli;
mod client;
mod commands;
mod failure;
mod render;

use std::{
    io::{self, Write},
    process::ExitCode,
};

use cli::{Command, Invocation};
use client::Client;
use failure::Failure;

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

// One thread is plenty for one request at a time, and starts faster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1)).await {
        Ok(out) => print(&out),
        Err(failure) => {
            eprintln!("heraldctl: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn run(args: impl Iterator<Item = String>) -> Result<String, Failure> {
    let invocation = cli::parse(args, chrono::Utc::now())?;
    if let Command::Help(text) = invocation.command {
        return Ok(text);
    }
    let client = connect(&invocation)?;
    commands::run(&client, &invocation.command, invocation.json).await
}

/// The API's address and the ops token: flags first, then the environment.
fn connect(invocation: &Invocation) -> Result<Client, Failure> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (url, source) = match (&invocation.url, env("HERALD_URL")) {
        (Some(url), _) => (url.clone(), "--url"),
        (None, Some(url)) => (url, "HERALD_URL"),
        (None, None) => (DEFAULT_URL.to_owned(), "the default URL"),
    };
    let token = invocation
        .token
        .clone()
        .or_else(|| env("HERALD_OPS_TOKEN"))
        .ok_or_else(|| {
            Failure::usage("HERALD_OPS_TOKEN is not set: export the ops token or pass --token")
        })?;
    Client::new(&url, source, token)
}

/// Writes the output; a reader that went away (`heraldctl dlq list | head`) is not an error.
fn print(out: &str) -> ExitCode {
    match io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            eprintln!("heraldctl: could not write the output: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}
