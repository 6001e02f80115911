//! What a hosted tenant's pipeline file may name, and what its names mean:
//! paths are inside the tenant's files root (`DIR/tenants/<t>/files/`), never
//! outside it by an absolute path, a `..` or a link; `plugin` names one of
//! the tenant's stored plugins (`name`, or `name@sha256:…` for one
//! version); state and dead letters live where the service keeps them; and
//! what would reach past the tenant (the server's standard input and output,
//! arbitrary network peers unless the operator allows them) is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::Base;
use crate::confine;
use crate::sink::SinkConfig;
use crate::source::SourceConfig;

/// Why a network source or sink is refused.
/// Why a hosted pipeline may not name a secret in the environment: it
/// would be the server's own (and, with `--allow-network`, could be sent
/// to any peer the tenant chooses).
fn no_environment(var: &str) -> String {
    format!(
        "`{var}`: a hosted pipeline cannot take credentials from the environment (it is the \
         server's, not the tenant's); hosted pipelines can reach only peers that need none"
    )
}

const NO_NETWORK: &str = "this server does not let pipelines reach network peers (its operator \
                          can start it with --allow-network)";

/// Finds a tenant's stored plugin: by name, the latest version, or the
/// version with a digest; returns its file and digest.
pub type FindPlugin<'a> = dyn Fn(&str, Option<&str>) -> Result<(PathBuf, String), String> + 'a;

/// The base of one tenant's pipeline.
pub struct TenantBase<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Its files root, canonical.
    pub files: PathBuf,
    /// Where the service keeps its pipelines' state.
    pub state: PathBuf,
    /// Where the service keeps its dead letters.
    pub dead_letters: PathBuf,
    /// Its plugins.
    pub plugins: &'a FindPlugin<'a>,
    /// The digest each stage ran before (a restart runs the same version
    /// even if a newer one was pushed under the name since).
    pub pins: &'a BTreeMap<String, String>,
    /// Whether pipelines may reach network peers (Kafka, sockets, ZeroMQ,
    /// MQTT, NATS).
    pub allow_network: bool,
    /// What each stage's plugin resolved to, by stage, for the catalogue.
    pub resolved: Mutex<BTreeMap<String, String>>,
}

impl Base for TenantBase<'_> {
    fn tenant(&self) -> Option<&str> {
        Some(self.tenant)
    }

    fn data_path(&self, written: &Path) -> Result<PathBuf, String> {
        confine::resolve_inside(&self.files, written)
    }

    fn plugin(&self, stage: &str, written: &Path) -> Result<(PathBuf, Option<String>), String> {
        let text = written.to_str().ok_or("a plugin name is text")?;
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (text, None),
        };
        if name.contains('/') || name.ends_with(".wasm") {
            return Err(format!(
                "`{text}`: a hosted pipeline names one of your uploaded plugins \
                 (`name` or `name@sha256:…`), not a file"
            ));
        }
        let pinned = digest.or_else(|| self.pins.get(stage).map(String::as_str));
        let (path, found) = (self.plugins)(name, pinned)?;
        self.resolved
            .lock()
            .unwrap()
            .insert(stage.to_string(), found);
        Ok((path, Some(format!("{name}.wasm"))))
    }

    fn state_dir(&self, written: Option<&Path>) -> Result<PathBuf, String> {
        match written {
            Some(_) => Err("the service keeps pipeline state itself; remove `state_dir`".into()),
            None => Ok(self.state.clone()),
        }
    }

    fn dead_letter(
        &self,
        pipeline: &str,
        stage: &str,
        written: Option<&Path>,
    ) -> Result<PathBuf, String> {
        match written {
            Some(_) => Err(
                "the service keeps dead letters itself (GET /v1/pipelines/{name}/dead-letters); \
                 remove `dead_letter`"
                    .into(),
            ),
            None => Ok(self.dead_letters.join(pipeline).join(stage)),
        }
    }

    fn check_source(&self, source: &SourceConfig) -> Result<(), String> {
        if let Some(var) = source.environment() {
            return Err(no_environment(var));
        }
        match source {
            SourceConfig::Stdin(_) => {
                Err("a hosted pipeline has no standard input; use an `http` source".into())
            }
            SourceConfig::Http(c) if c.listen.is_some() => Err(
                "a hosted `http` source takes data through POST /v1/pipelines/{name}/ingest; \
                 remove `listen`"
                    .into(),
            ),
            SourceConfig::Socket(_) | SourceConfig::Kafka(_) if !self.allow_network => {
                Err(NO_NETWORK.into())
            }
            #[cfg(feature = "zeromq")]
            SourceConfig::Zeromq(_) if !self.allow_network => Err(NO_NETWORK.into()),
            #[cfg(feature = "mqtt")]
            SourceConfig::Mqtt(_) if !self.allow_network => Err(NO_NETWORK.into()),
            #[cfg(feature = "nats")]
            SourceConfig::Nats(_) if !self.allow_network => Err(NO_NETWORK.into()),
            _ => Ok(()),
        }
    }

    fn check_sink(&self, sink: &SinkConfig) -> Result<(), String> {
        if let Some(var) = sink.environment() {
            return Err(no_environment(var));
        }
        match sink {
            SinkConfig::Console(_) => Err(
                "a hosted pipeline has no console; use a `directory` sink in your files root"
                    .into(),
            ),
            _ if sink.reaches_network() && !self.allow_network => Err(NO_NETWORK.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(text: &str) -> SinkConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn network_sinks_need_the_operators_leave() {
        let find =
            |_: &str, _: Option<&str>| -> Result<(PathBuf, String), String> { Err("none".into()) };
        let pins = BTreeMap::new();
        let base = |allow_network| TenantBase {
            tenant: "t",
            files: PathBuf::from("/files"),
            state: PathBuf::from("/state"),
            dead_letters: PathBuf::from("/dead"),
            plugins: &find,
            pins: &pins,
            allow_network,
            resolved: Mutex::new(BTreeMap::new()),
        };
        let sinks = [
            "type = \"elasticsearch\"\nurl = \"http://h:9200\"\nindex = \"i\"",
            "type = \"http\"\nurl = \"http://h/in\"",
            "type = \"kafka\"\nbrokers = \"h:9092\"\ntopic = \"t\"",
        ];
        for text in sinks {
            let err = base(false).check_sink(&sink(text)).unwrap_err();
            assert!(err.contains("--allow-network"), "{text}: {err}");
            assert!(base(true).check_sink(&sink(text)).is_ok(), "{text}");
        }
        assert!(base(false).check_sink(&sink("type = \"null\"")).is_ok());
        // Credentials from the environment would be the server's: refused
        // even where the network is allowed.
        let secrets = [
            ("type = \"object-store\"\nurl = \"s3://b/p\"", "`AWS_*`"),
            (
                "type = \"elasticsearch\"\nurl = \"http://h:9200\"\nindex = \"i\"\n\
                 username = \"u\"\npassword_env = \"HOME\"",
                "`HOME`",
            ),
            (
                "type = \"http\"\nurl = \"http://h/in\"\napi_key_env = \"PATH\"",
                "`PATH`",
            ),
        ];
        for (text, var) in secrets {
            let err = base(true).check_sink(&sink(text)).unwrap_err();
            assert!(
                err.starts_with(var) && err.contains("environment"),
                "{text}: {err}"
            );
        }
    }

    #[cfg(all(feature = "zeromq", feature = "mqtt", feature = "nats"))]
    #[test]
    fn zeromq_mqtt_and_nats_need_the_operators_leave() {
        use crate::config::PipelineFile;
        let resolve = |allow_network: bool, tables: &str| -> Result<(), String> {
            let dir = tempfile::tempdir().unwrap();
            let text = format!("name = \"p\"\nbatch_interval = \"1s\"\n{tables}");
            let file = PipelineFile::parse(Path::new("p.toml"), text).map_err(|e| e.to_string())?;
            let plugins =
                |_: &str, _: Option<&str>| Err::<(PathBuf, String), _>("none".to_string());
            let pins = BTreeMap::new();
            let base = TenantBase {
                tenant: "t",
                files: dir.path().to_path_buf(),
                state: dir.path().join("state"),
                dead_letters: dir.path().join("dead"),
                plugins: &plugins,
                pins: &pins,
                allow_network,
                resolved: Mutex::new(BTreeMap::new()),
            };
            file.resolve(&base).map(drop).map_err(|e| e.to_string())
        };
        const NULL: &str = "[[sinks]]\ntype = \"null\"\n";
        const HTTP: &str = "[[sources]]\ntype = \"http\"\n";
        let cases = [
            format!("[[sources]]\ntype = \"zeromq\"\nendpoint = \"tcp://10.0.0.1:5555\"\n{NULL}"),
            format!(
                "[[sources]]\ntype = \"mqtt\"\nurl = \"mqtt://h:1883\"\ntopics = [\"a\"]\n{NULL}"
            ),
            format!(
                "[[sources]]\ntype = \"nats\"\nurl = \"nats://h:4222\"\nsubjects = [\"a\"]\n{NULL}"
            ),
            format!("{HTTP}[[sinks]]\ntype = \"mqtt\"\nurl = \"mqtt://h:1883\"\ntopic = \"a\"\n"),
            format!("{HTTP}[[sinks]]\ntype = \"nats\"\nurl = \"nats://h:4222\"\nsubject = \"a\"\n"),
        ];
        for tables in &cases {
            let err = resolve(false, tables).unwrap_err();
            assert!(err.contains("--allow-network"), "{tables}: {err}");
            resolve(true, tables).unwrap_or_else(|e| panic!("{tables}: {e}"));
        }
    }

    /// A tenant's `ca_file` is a file of its own: a path outside its files
    /// root (absolute, or up with `..`) is refused, one inside resolves
    /// there.
    #[cfg(all(feature = "elasticsearch", feature = "http-sink"))]
    #[test]
    fn a_tenants_ca_file_stays_inside_its_files_root() {
        use crate::config::PipelineFile;
        let dir = tempfile::tempdir().unwrap();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("ca.pem"), "").unwrap();
        let files = files.canonicalize().unwrap();
        let resolve = |sink: &str| -> Result<crate::config::PipelineSpec, String> {
            let text = format!(
                "name = \"p\"\nbatch_interval = \"1s\"\n[[sources]]\ntype = \"http\"\n\
                 [[sinks]]\n{sink}\n"
            );
            let file = PipelineFile::parse(Path::new("p.toml"), text).map_err(|e| e.to_string())?;
            let plugins =
                |_: &str, _: Option<&str>| Err::<(PathBuf, String), _>("none".to_string());
            let pins = BTreeMap::new();
            let base = TenantBase {
                tenant: "t",
                files: files.clone(),
                state: dir.path().join("state"),
                dead_letters: dir.path().join("dead"),
                plugins: &plugins,
                pins: &pins,
                allow_network: true,
                resolved: Mutex::new(BTreeMap::new()),
            };
            file.resolve(&base).map_err(|e| e.to_string())
        };
        let sinks = [
            "type = \"elasticsearch\"\nurl = \"https://h:9200\"\nindex = \"i\"",
            "type = \"http\"\nurl = \"https://h/in\"",
        ];
        for sink in sinks {
            for outside in ["/etc/ssl/certs/ca-certificates.crt", "../../../etc/passwd"] {
                let err = resolve(&format!("{sink}\nca_file = \"{outside}\"")).expect_err(outside);
                assert!(err.contains("`ca_file`"), "{sink} {outside}: {err}");
            }
            let spec = resolve(&format!("{sink}\nca_file = \"ca.pem\"")).unwrap();
            let ca = match &spec.sinks[0].value {
                SinkConfig::Elasticsearch(c) => c.ca_file.clone(),
                SinkConfig::Http(c) => c.ca_file.clone(),
                other => panic!("{other:?}"),
            };
            assert_eq!(ca, Some(files.join("ca.pem")), "{sink}");
        }
    }
}
