//! Typed configuration, validated at start-up with every problem reported at once.
//!
//! Four TOML files: `sigloop.toml` (settings), `taxonomy.toml`, `signals.toml` and `routes.toml`. Each
//! missing file falls back to the copy embedded in the binary, which equals the shipped `config/` file,
//! so `sigloop serve` runs with no configuration at all. Environment variables
//! `SIGLOOP__SECTION__KEY=value` override `sigloop.toml`. The content hash of the taxonomy, signals and
//! routes files is the *config version*, stored with every decision.

pub mod routes;
pub mod settings;
pub mod signals;
pub mod taxonomy;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use routes::RoutesConfig;
pub use settings::Settings;
pub use signals::SignalsConfig;
pub use taxonomy::TaxonomyConfig;

pub const DEFAULT_SETTINGS: &str = include_str!("../../config/sigloop.toml");
pub const DEFAULT_TAXONOMY: &str = include_str!("../../config/taxonomy.toml");
pub const DEFAULT_SIGNALS: &str = include_str!("../../config/signals.toml");
pub const DEFAULT_ROUTES: &str = include_str!("../../config/routes.toml");

/// Prefix of environment variables that override `sigloop.toml`.
pub const ENV_PREFIX: &str = "SIGLOOP__";

/// All of the configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub settings: Settings,
    pub taxonomy: TaxonomyConfig,
    pub signals: SignalsConfig,
    pub routes: RoutesConfig,
    /// Hex SHA-256 prefix of the taxonomy, signals and routes sources.
    pub version: String,
}

/// Every problem found in the configuration, one sentence each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// The text of the four files, wherever they came from.
#[derive(Debug, Clone)]
pub struct ConfigSources {
    pub settings: String,
    pub taxonomy: String,
    pub signals: String,
    pub routes: String,
}

impl ConfigSources {
    pub fn embedded() -> ConfigSources {
        ConfigSources {
            settings: DEFAULT_SETTINGS.to_owned(),
            taxonomy: DEFAULT_TAXONOMY.to_owned(),
            signals: DEFAULT_SIGNALS.to_owned(),
            routes: DEFAULT_ROUTES.to_owned(),
        }
    }

    /// Reads the files of `dir`; a missing file falls back to the embedded default.
    pub fn from_dir(dir: &Path) -> Result<ConfigSources, ConfigError> {
        let mut problems = Vec::new();
        let mut read = |name: &str, default: &str| -> String {
            let path: PathBuf = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => default.to_owned(),
                Err(error) => {
                    problems.push(format!("cannot read {}: {error}", path.display()));
                    String::new()
                }
            }
        };
        let sources = ConfigSources {
            settings: read("sigloop.toml", DEFAULT_SETTINGS),
            taxonomy: read("taxonomy.toml", DEFAULT_TAXONOMY),
            signals: read("signals.toml", DEFAULT_SIGNALS),
            routes: read("routes.toml", DEFAULT_ROUTES),
        };
        if problems.is_empty() {
            Ok(sources)
        } else {
            Err(ConfigError { problems })
        }
    }
}

impl Config {
    /// The embedded defaults with no overrides.
    pub fn embedded() -> Config {
        Config::parse(&ConfigSources::embedded(), std::iter::empty())
            .expect("the embedded configuration is valid (tested)")
    }

    /// Loads `dir` if given, else `./config` when it exists, else the embedded defaults; then applies
    /// the `SIGLOOP__` variables of `env`.
    pub fn load(
        dir: Option<&Path>,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let sources = match dir {
            Some(dir) => {
                if !dir.is_dir() {
                    return Err(ConfigError {
                        problems: vec![format!(
                            "config directory {} does not exist",
                            dir.display()
                        )],
                    });
                }
                ConfigSources::from_dir(dir)?
            }
            None if Path::new("config").is_dir() => ConfigSources::from_dir(Path::new("config"))?,
            None => ConfigSources::embedded(),
        };
        Config::parse(&sources, env)
    }

    pub fn parse(
        sources: &ConfigSources,
        env: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let settings = parse_settings(&sources.settings, env, &mut problems);
        let taxonomy: Option<TaxonomyConfig> =
            parse_file("taxonomy.toml", &sources.taxonomy, &mut problems);
        let signals: Option<SignalsConfig> =
            parse_file("signals.toml", &sources.signals, &mut problems);
        let routes: Option<RoutesConfig> =
            parse_file("routes.toml", &sources.routes, &mut problems);
        if let Some(settings) = &settings {
            problems.extend(settings.validate());
        }
        if let Some(taxonomy) = &taxonomy {
            problems.extend(taxonomy.validate());
        }
        if let (Some(signals), Some(taxonomy)) = (&signals, &taxonomy) {
            let is_tag = |id: &str| taxonomy.tags.iter().any(|tag| tag.id == id);
            problems.extend(signals.validate(&is_tag));
        }
        if let Some(routes) = &routes {
            problems.extend(routes.validate());
        }
        match (settings, taxonomy, signals, routes) {
            (Some(settings), Some(taxonomy), Some(signals), Some(routes))
                if problems.is_empty() =>
            {
                Ok(Config {
                    settings,
                    taxonomy,
                    signals,
                    routes,
                    version: config_version(sources),
                })
            }
            _ => Err(ConfigError { problems }),
        }
    }
}

fn parse_file<T: serde::de::DeserializeOwned>(
    name: &str,
    text: &str,
    problems: &mut Vec<String>,
) -> Option<T> {
    match toml::from_str(text) {
        Ok(value) => Some(value),
        Err(error) => {
            problems.push(format!("{name}: {}", error.to_string().trim_end()));
            None
        }
    }
}

/// Parses `sigloop.toml`, then overlays `SIGLOOP__SECTION__KEY` variables. A variable's value is read
/// as a TOML value when it parses as one (`8`, `true`, `"x"`), else as a plain string.
fn parse_settings(
    text: &str,
    env: impl Iterator<Item = (String, String)>,
    problems: &mut Vec<String>,
) -> Option<Settings> {
    // The file is layered over the embedded defaults, so it needs to name only what it changes.
    let mut document: toml::Table =
        toml::from_str(DEFAULT_SETTINGS).expect("the embedded settings parse (tested)");
    match toml::from_str::<toml::Table>(text) {
        Ok(table) => merge_tables(&mut document, table),
        Err(error) => {
            problems.push(format!("sigloop.toml: {}", error.to_string().trim_end()));
            return None;
        }
    }
    let mut overrides: Vec<(String, String)> = env
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    for (name, raw_value) in overrides {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_lowercase)
            .collect();
        if path.len() < 2 || path.iter().any(String::is_empty) {
            problems.push(format!(
                "environment variable {name} must name a section and a key: SIGLOOP__SECTION__KEY"
            ));
            continue;
        }
        let value = toml::from_str::<toml::Table>(&format!("value = {raw_value}"))
            .ok()
            .and_then(|mut table| table.remove("value"))
            .unwrap_or_else(|| toml::Value::String(raw_value.clone()));
        let mut table = &mut document;
        for segment in &path[..path.len() - 1] {
            let entry = table
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => table = inner,
                _ => {
                    problems.push(format!(
                        "environment variable {name}: `{segment}` is not a section"
                    ));
                    return None;
                }
            }
        }
        table.insert(path[path.len() - 1].clone(), value);
    }
    match Settings::deserialize(toml::Value::Table(document)) {
        Ok(settings) => Some(settings),
        Err(error) => {
            problems.push(format!(
                "sigloop.toml (with SIGLOOP__ overrides): {}",
                error.to_string().trim_end()
            ));
            None
        }
    }
}

/// Deep merge: tables merge key by key, anything else in `overlay` replaces what `base` had.
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(base_table)), toml::Value::Table(overlay_table)) => {
                merge_tables(base_table, overlay_table)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn config_version(sources: &ConfigSources) -> String {
    let mut hasher = Sha256::new();
    for text in [&sources.taxonomy, &sources.signals, &sources.routes] {
        hasher.update((text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_configuration_is_valid() {
        let config = Config::parse(&ConfigSources::embedded(), std::iter::empty())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(config.settings.server.listen, "127.0.0.1:8080");
        assert_eq!(config.version.len(), 16);
    }

    #[test]
    fn environment_variables_override_the_settings_file() {
        let env = vec![
            (
                "SIGLOOP__SERVER__LISTEN".to_owned(),
                "127.0.0.1:0".to_owned(),
            ),
            ("SIGLOOP__PROCESSOR__BATCH_SIZE".to_owned(), "7".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let config = Config::parse(&ConfigSources::embedded(), env.into_iter()).unwrap();
        assert_eq!(config.settings.server.listen, "127.0.0.1:0");
        assert_eq!(config.settings.processor.batch_size, 7);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut sources = ConfigSources::embedded();
        sources.settings = sources
            .settings
            .replace("batch_size = ", "batch_size = 0 #");
        sources
            .routes
            .push_str("\n[[queue]]\nname = \"ghost\"\nteam = \"nobody\"\n");
        let env = vec![(
            "SIGLOOP__SERVER__LISTEN".to_owned(),
            "not-an-address".to_owned(),
        )];
        let error = Config::parse(&sources, env.into_iter()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("batch_size"), "{text}");
        assert!(text.contains("unknown team `nobody`"), "{text}");
        assert!(text.contains("not-an-address"), "{text}");
    }

    #[test]
    fn a_settings_file_names_only_what_it_changes() {
        let mut sources = ConfigSources::embedded();
        sources.settings = "[server]\nlisten = \"0.0.0.0:9000\"\n".to_owned();
        let config = Config::parse(&sources, std::iter::empty()).unwrap();
        assert_eq!(config.settings.server.listen, "0.0.0.0:9000");
        assert_eq!(config.settings.processor.batch_size, 1000);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let mut sources = ConfigSources::embedded();
        sources.signals.push_str("\nsurprise = 1\n");
        let error = Config::parse(&sources, std::iter::empty()).unwrap_err();
        assert!(error.to_string().contains("surprise"), "{error}");
    }

    #[test]
    fn auth_defaults_to_open_on_loopback_and_the_environment_switches_it_to_tokens() {
        let config = Config::embedded();
        assert_eq!(config.settings.server.auth, settings::AuthMode::Open);
        assert!(!config.settings.server.allow_open);
        assert!(
            config.settings.server.request_timeout_secs > config.settings.server.wait_timeout_secs
        );
        assert_eq!(config.settings.server.open_listen_problem(), None);
        let env = vec![("SIGLOOP__SERVER__AUTH".to_owned(), "tokens".to_owned())];
        let config = Config::parse(&ConfigSources::embedded(), env.into_iter()).unwrap();
        assert_eq!(config.settings.server.auth, settings::AuthMode::Tokens);
        let env = vec![("SIGLOOP__SERVER__AUTH".to_owned(), "anyone".to_owned())];
        let error = Config::parse(&ConfigSources::embedded(), env.into_iter()).unwrap_err();
        assert!(error.to_string().contains("anyone"), "{error}");
    }

    #[test]
    fn open_auth_is_refused_off_loopback_unless_allowed_and_tokens_are_never_refused() {
        let mut server = Config::embedded().settings.server;
        for listen in [
            "127.0.0.1:8080",
            "127.8.9.1:1",
            "[::1]:8080",
            "localhost:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            server.listen = listen.to_owned();
            assert_eq!(server.open_listen_problem(), None, "{listen}");
        }
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "10.1.2.3:8080",
            "sigloop.internal:8080",
        ] {
            server.listen = listen.to_owned();
            let problem = server
                .open_listen_problem()
                .unwrap_or_else(|| panic!("{listen}"));
            assert!(problem.contains("server.auth") && problem.contains("server.allow_open"));
        }
        server.allow_open = true;
        assert_eq!(server.open_listen_problem(), None);
        server.allow_open = false;
        server.auth = settings::AuthMode::Tokens;
        assert_eq!(server.open_listen_problem(), None);
    }

    #[test]
    fn the_config_version_changes_with_the_routes() {
        let base = Config::parse(&ConfigSources::embedded(), std::iter::empty()).unwrap();
        let mut sources = ConfigSources::embedded();
        sources
            .routes
            .push_str("\n# a comment changes the content hash\n");
        let changed = Config::parse(&sources, std::iter::empty()).unwrap();
        assert_ne!(base.version, changed.version);
    }
}
