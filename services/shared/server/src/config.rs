//! A daemon's config file: `--config FILE` (or `WHARF_CONFIG`), TOML, one
//! `key = value` per flag, the key being the long flag's name
//! (`ftp-listen = "0.0.0.0:2121"`, `max-connections = 512`, `no-exec =
//! true`). The file's values become the flags' defaults, so a flag or an
//! environment variable given as well wins over the file. An unknown key,
//! a section, or a value the flag would refuse is an error naming the file,
//! the line and the key. `--print-config` prints the effective settings as
//! such a file, each with where it came from, secrets hidden.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, Command};

/// The environment variable naming a daemon's config file.
pub const CONFIG_ENV: &str = "WHARF_CONFIG";

/// `--config` and `--print-config`, flattened into each daemon's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Read settings from this TOML file: one `key = value` per flag, named
    /// as the long flag (ftp-listen = "0.0.0.0:2121", max-connections =
    /// 512, no-exec = true). Flags and environment variables win over it.
    #[arg(long, env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective settings as a config file (where each came from
    /// in a comment, secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// `--completions SHELL` and `--man`.
    #[command(flatten)]
    pub docs: wharf_core::cli::DocsArgs,
    /// How the log is written on stderr: text, or json (one object per line,
    /// for journald and log shippers).
    #[arg(
        long,
        env = "WHARF_LOG_FORMAT",
        value_enum,
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub log_format: crate::cli::LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics and a health check
    /// at http://ADDR/health (200 when the database answers and every
    /// listener accepts) [default: off].
    #[arg(long, env = "WHARF_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl ConfigArgs {
    /// Starts the metrics and health endpoint when `--metrics-listen` asks
    /// for one; its address. `listeners` are the process's, by name.
    pub async fn start_metrics(
        &self,
        store: &wharf_store::Store,
        listeners: Vec<(&'static str, std::net::SocketAddr)>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> std::io::Result<Option<std::net::SocketAddr>> {
        let Some(at) = &self.metrics_listen else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(at).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on {at} for metrics ({e}); is the port in use? pick another with --metrics-listen"),
            )
        })?;
        let addr = listener.local_addr()?;
        tokio::spawn(crate::metrics::serve(
            listener,
            store.clone(),
            listeners,
            shutdown.clone(),
        ));
        Ok(Some(addr))
    }
}

/// Arguments that are not settings.
const NOT_SETTINGS: &[&str] = &[
    "help",
    "version",
    "config",
    "print_config",
    "completions",
    "man",
];

/// Parses the daemon's command line over its config file; prints a
/// message and exits (2) on any error, prints the settings and exits (0) on
/// `--print-config`.
pub fn parse<T: clap::Parser>() -> T {
    let args: Vec<OsString> = std::env::args_os().collect();
    match parse_from(&args) {
        Ok(Parsed::Run(t)) => t,
        Ok(Parsed::Printed(text)) => {
            print!("{text}");
            std::process::exit(0);
        }
        Err(Failure::Clap(e)) => e.exit(),
        Err(Failure::File(msg)) => {
            let name = args
                .first()
                .and_then(|a| Path::new(a).file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "wharf".into());
            eprintln!("{name}: {msg}");
            std::process::exit(2);
        }
    }
}

/// What parsing gave.
pub enum Parsed<T> {
    /// Settings to run with.
    Run(T),
    /// `--print-config`'s text.
    Printed(String),
}

/// Why parsing failed.
#[derive(Debug)]
pub enum Failure {
    /// The command line (clap prints it).
    Clap(clap::Error),
    /// The config file, said in full.
    File(String),
}

/// [`parse`] on `args` (the program's name first), without exiting.
pub fn parse_from<T: clap::Parser>(args: &[OsString]) -> Result<Parsed<T>, Failure> {
    let mut cmd = T::command();
    let mut from_file = Vec::new();
    if let Some(file) = config_file(args) {
        (cmd, from_file) = with_file(cmd, &file)?;
    }
    let matches = cmd
        .clone()
        .try_get_matches_from(args)
        .map_err(Failure::Clap)?;
    if matches.try_get_one::<bool>("print_config").ok().flatten() == Some(&true) {
        return Ok(Parsed::Printed(print(&cmd, &matches, &from_file)));
    }
    let docs = wharf_core::cli::DocsArgs {
        completions: matches
            .try_get_one::<clap_complete::Shell>("completions")
            .ok()
            .flatten()
            .copied(),
        man: matches.try_get_one::<bool>("man").ok().flatten() == Some(&true),
    };
    if let Some(text) = docs
        .text(T::command())
        .map_err(|e| Failure::File(format!("cannot make it: {e}")))?
    {
        return Ok(Parsed::Printed(String::from_utf8_lossy(&text).into_owned()));
    }
    T::from_arg_matches(&matches)
        .map(Parsed::Run)
        .map_err(Failure::Clap)
}

/// The config file the command line or the environment names.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `cmd` with the file's values as its flags' defaults; the ids it set.
fn with_file(mut cmd: Command, file: &Path) -> Result<(Command, Vec<String>), Failure> {
    let shown = file.display();
    let text = std::fs::read_to_string(file)
        .map_err(|e| Failure::File(format!("cannot read the config file {shown}: {e}")))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Failure::File(format!(
            "the config file {shown} is not TOML: {}",
            e.to_string().trim_end()
        ))
    })?;
    let program = cmd.get_name().to_owned();
    let mut set = Vec::new();
    for (key, value) in table {
        let at = line_of(&text, &key);
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .find(|a| {
                a.get_long() == Some(long.as_str()) && !NOT_SETTINGS.contains(&a.get_id().as_str())
            })
            .cloned();
        let Some(arg) = arg else {
            return Err(Failure::File(format!(
                "{shown} line {at}: unknown key `{key}`; the keys are the long flags `{program} --help` lists (ftp-listen, max-connections, ...)"
            )));
        };
        let values = match value_strings(&arg, &value) {
            Some(v) => v,
            None => {
                return Err(Failure::File(format!(
                    "{shown} line {at}: `{key}` takes {}; write {key} = {}",
                    what_it_takes(&arg),
                    example(&arg)
                )));
            }
        };
        // What the flag would say of each value, given on a command line.
        if !is_switch(&arg) {
            for v in &values {
                let alone = Command::new("wharf").no_binary_name(true).arg(
                    arg.clone()
                        .required(false)
                        .default_values(Vec::<&str>::new()),
                );
                if let Err(e) = alone.try_get_matches_from([format!("--{long}"), v.clone()]) {
                    let why = e.to_string();
                    let why = why
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("error: ");
                    return Err(Failure::File(format!("{shown} line {at}: `{key}`: {why}")));
                }
            }
        }
        let id = arg.get_id().clone();
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        set.push(id.as_str().to_owned());
        cmd = cmd.mut_arg(id, |a| a.default_values(values));
    }
    Ok((cmd, set))
}

/// The line `key` is set on (1 when not found).
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// True for a flag without a value (`--no-exec`).
fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

/// The strings a TOML value gives the flag; `None` when it cannot.
fn value_strings(arg: &Arg, value: &toml::Value) -> Option<Vec<String>> {
    use toml::Value;
    if is_switch(arg) {
        return match value {
            Value::Boolean(b) => Some(vec![b.to_string()]),
            _ => None,
        };
    }
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Integer(i) => Some(i.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    };
    match value {
        Value::Array(items)
            if arg.get_num_args().is_some_and(|n| n.max_values() > 1)
                || matches!(arg.get_action(), ArgAction::Append) =>
        {
            items.iter().map(one).collect()
        }
        v => one(v).map(|s| vec![s]),
    }
}

fn what_it_takes(arg: &Arg) -> &'static str {
    if is_switch(arg) {
        "true or false"
    } else {
        "a string or a number"
    }
}

fn example(arg: &Arg) -> String {
    if is_switch(arg) {
        return "true".into();
    }
    match arg.get_default_values().first() {
        Some(d) => format!("\"{}\"", d.to_string_lossy()),
        None => "\"...\"".into(),
    }
}

/// The effective settings as a config file.
fn print(cmd: &Command, matches: &clap::ArgMatches, from_file: &[String]) -> String {
    let mut out = format!(
        "# {} settings: the effective value of each, and where it came from\n",
        cmd.get_name()
    );
    for arg in cmd.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            continue;
        };
        if NOT_SETTINGS.contains(&id) || arg.is_hide_set() {
            continue;
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("from --{long}"),
            Some(ValueSource::EnvVariable) => format!(
                "from {}",
                arg.get_env().map_or("the environment".into(), |e| e
                    .to_string_lossy()
                    .into_owned())
            ),
            Some(ValueSource::DefaultValue) if from_file.iter().any(|f| f == id) => {
                "from the config file".into()
            }
            Some(ValueSource::DefaultValue) => "default".into(),
            _ => "not set".into(),
        };
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let shown: Vec<String> = values.iter().map(|v| secret_hidden(long, v)).collect();
        let line = if is_switch(arg) {
            format!("{long} = {}", shown.first().map_or("false", |v| v.as_str()))
        } else if shown.is_empty() {
            format!("# {long} =")
        } else if shown.len() == 1 {
            format!("{long} = {}", quoted(&shown[0]))
        } else {
            format!(
                "{long} = [{}]",
                shown
                    .iter()
                    .map(|v| quoted(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push_str(&format!("{line:<48} # {source}\n"));
    }
    if let Some(data_dir) = matches.get_raw("data_dir").and_then(|mut v| v.next())
        && cmd.get_name() != "wharf-chatd"
    {
        let homes = Path::new(data_dir).join("homes");
        out.push_str(&format!(
            "# quota: {}\n",
            wharf_store::home::btrfs::describe(&homes)
        ));
    }
    out
}

/// A value as TOML: a whole number bare, anything else a string.
fn quoted(v: &str) -> String {
    match v.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => toml::Value::String(v.to_owned()).to_string(),
    }
}

/// A value as it may be printed: a database URL without its password,
/// anything secret as `***`.
fn secret_hidden(long: &str, v: &str) -> String {
    if long.contains("password") || long.contains("secret") {
        "***".into()
    } else if long.contains("database-url") {
        wharf_core::config::shown_database_url(v)
    } else {
        v.to_owned()
    }
}
