//! `sluice plugin …`: making, building, inspecting and trying out plugins.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use sluice::batch::Records;
use sluice::plugin::{PluginHost, WORLD, inspect};
use sluice::sink::Format;
use sluice::source::LineSplitter;

/// `sluice plugin inspect`: what a component imports and exports, and
/// whether it runs as a stage.
pub fn inspect_plugin(file: PathBuf) -> anyhow::Result<ExitCode> {
    let host = PluginHost::new()?;
    let info = match inspect(&host, &file) {
        Ok(info) => info,
        Err(err) => {
            eprintln!("error: {err}");
            return Ok(ExitCode::from(1));
        }
    };
    println!("file:    {}", file.display());
    println!("size:    {} bytes", info.size);
    println!("hash:    {}", info.hash);
    println!("imports:");
    for import in &info.imports {
        println!("  {import}");
    }
    println!("exports:");
    for export in &info.exports {
        println!("  {export}");
    }
    match info.verdict {
        Ok(()) => {
            println!("world:   {WORLD} (runs as a sluice stage)");
            Ok(ExitCode::SUCCESS)
        }
        Err(why) => {
            println!("world:   not runnable as a sluice stage: {why}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `sluice plugin new`: a project folder to start from.
pub fn new_plugin(
    dir: &std::path::Path,
    lang: sluice::plugin::project::Lang,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let sdk = sdk.unwrap_or_else(sluice::plugin::project::default_sdk);
    let written = sluice::plugin::project::new_project(dir, lang, &sdk)?;
    println!("created a {lang} plugin in {}:", dir.display());
    for file in written {
        println!("  {}", file.display());
    }
    println!(
        "next: sluice plugin build {} (its README has the rest)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice plugin build`: a project into a component, checked to be a stage.
pub fn build_plugin(
    dir: &std::path::Path,
    out: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let built = sluice::plugin::project::build(dir, out)?;
    let host = PluginHost::new()?;
    let info = inspect(&host, &built.path)?;
    if let Err(why) = info.verdict {
        eprintln!(
            "error: {} was built but cannot run as a stage: {why}",
            built.path.display()
        );
        return Ok(ExitCode::from(1));
    }
    println!(
        "built {} ({}, {} KiB) in {:.1} s; it implements {WORLD}",
        built.path.display(),
        built.lang,
        info.size.div_ceil(1024),
        built.took.as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

/// `sluice plugin test`: one plugin over the lines of a file.
pub fn test_plugin(
    file: &std::path::Path,
    input: &std::path::Path,
    config: &[String],
    format: &str,
    batch: usize,
) -> anyhow::Result<ExitCode> {
    let format = match format {
        "text" => Format::Text,
        "jsonl" => Format::Jsonl,
        other => anyhow::bail!("unknown --format `{other}`: use `text` or `jsonl`"),
    };
    let mut pairs = Vec::new();
    for item in config {
        let (k, v) = item
            .split_once('=')
            .with_context(|| format!("--config `{item}`: expected KEY=VALUE"))?;
        pairs.push((k.to_string(), v.to_string()));
    }
    pairs.sort();
    let bytes = if input.as_os_str() == "-" {
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut all)
            .context("reading standard input")?;
        all
    } else {
        std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?
    };
    let mut records = Records::default();
    let mut splitter = LineSplitter::default();
    splitter.feed(&bytes, &mut records);
    splitter.finish(&mut records);
    let host = PluginHost::new()?;
    match sluice::plugin::test_plugin(&host, file, &pairs, &records, batch, format) {
        Ok(report) => {
            std::io::Write::write_all(&mut std::io::stdout(), &report.output)?;
            for failure in &report.failures {
                eprintln!("{failure}");
            }
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
