//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::setup::Kind;

pub(crate) const USAGE: &str = "usage: loadbench [OPTIONS] [RESULTS.md]
  --enclave PATH          the enclave binary measured (default: `enclave` beside loadbench)
  --enclave-b PATH        a second enclave binary, measured alternately with the first (A/B)
  --label-a TEXT          what to call the first binary in the report (default: A)
  --label-b TEXT          what to call the second (default: B)
  --enclave-limits LINE   an extra line for Enclave's [limits] section, e.g. 'max_concurrency = 64'
  --enclave-audit LINE    an extra line for Enclave's [audit] section, e.g. 'commit_delay_us = 0'
                          (repeat for several)
  --enclave-log LEVEL     ENCLAVE_LOG of the served Enclave (default: warn)
  --nginx PATH            the nginx binary (default: nginx on PATH, /usr/sbin/nginx)
  --nginx-workers N       worker processes of the proxy nginx (default 2, one per core)
  --parts LIST            which parts to run, of a,b,c (default: a,b,c; d is on with --enclave-b)
  --kinds LIST            response kinds of parts a and b, of json,sse (default: json,sse)
  --seconds S             seconds per measured cell of parts a and b (default 10)
  --warmup S              unmeasured warm-up per target and kind (default 1)
  --concurrency N         the high closed-loop concurrency (default 64)
  --client-threads N      client threads at the high concurrency (default 2; 1 at concurrency 1)
  --open-share F          open-loop rate as a share of Enclave's capacity (default 0.5)
  --open-rate R           open-loop rate in req/s, instead of the share
  --open-connections N    keep-alive connections of the open-loop generator (default 64)
  --flood-connections N   slow-body connections (default 500)
  --flood-sources N       loopback source addresses of the spread flood, from 127.0.0.2 (default 50)
  --flood-trickle-ms MS   one body byte per flood connection this often; 0: never (default 1000)
  --flood-seconds S       how long the normal client is measured in each flood scenario (default 20)
  --flood-rate R          the normal client's open-loop rate (default 50 req/s)
  --flood-lanes N         the normal client's lanes (default 4)
  --flood-keepalive       the normal client keeps its connections (default: a new one per request)
  --flood-no-key          flood connections send no API key (default: a valid key)
  --quiet-wait S          before each cell wait up to S seconds for other processes to use under
                          10 % of a core (default 20; 0: do not wait, do not re-measure)
  --noisy-pct P           a cell during which other processes used more than P % of a core is
                          measured once more and, if still disturbed, flagged (default 20)
  --out FILE              also write the Markdown to FILE (as does a positional RESULTS.md)
  --keep                  keep the temporary directory (configs, logs)";

/// What to run.
#[derive(Clone, Debug)]
pub(crate) struct Args {
    pub(crate) enclave: PathBuf,
    pub(crate) enclave_b: Option<PathBuf>,
    pub(crate) label_a: String,
    pub(crate) label_b: String,
    pub(crate) enclave_limits: Vec<String>,
    /// Extra `[audit]` lines of every Enclave's config.
    pub(crate) enclave_audit: Vec<String>,
    pub(crate) enclave_log: String,
    pub(crate) nginx: Option<PathBuf>,
    pub(crate) nginx_workers: usize,
    pub(crate) part_a: bool,
    pub(crate) part_b: bool,
    pub(crate) part_c: bool,
    pub(crate) kinds: Vec<Kind>,
    pub(crate) seconds: Duration,
    pub(crate) warmup: Duration,
    pub(crate) concurrency: usize,
    pub(crate) client_threads: usize,
    pub(crate) open_share: f64,
    pub(crate) open_rate: Option<f64>,
    pub(crate) open_connections: usize,
    pub(crate) flood_connections: usize,
    pub(crate) flood_sources: u32,
    pub(crate) flood_trickle: Option<Duration>,
    pub(crate) flood_seconds: Duration,
    pub(crate) flood_rate: f64,
    pub(crate) flood_lanes: usize,
    pub(crate) flood_keepalive: bool,
    pub(crate) flood_key: bool,
    pub(crate) quiet_wait: Duration,
    pub(crate) noisy_pct: f64,
    pub(crate) out: Option<PathBuf>,
    pub(crate) keep: bool,
}

/// Parses the arguments after the program name; `None` for `--help`.
pub(crate) fn parse(argv: &[String]) -> anyhow::Result<Option<Args>> {
    let beside_me = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("enclave")))
        .unwrap_or_else(|| PathBuf::from("enclave"));
    let mut a = Args {
        enclave: beside_me,
        enclave_b: None,
        label_a: "A".into(),
        label_b: "B".into(),
        enclave_limits: Vec::new(),
        enclave_audit: Vec::new(),
        enclave_log: "warn".into(),
        nginx: None,
        nginx_workers: 2,
        part_a: true,
        part_b: true,
        part_c: true,
        kinds: vec![Kind::Json, Kind::Sse],
        seconds: Duration::from_secs(10),
        warmup: Duration::from_secs(1),
        concurrency: 64,
        client_threads: 2,
        open_share: 0.5,
        open_rate: None,
        open_connections: 64,
        flood_connections: 500,
        flood_sources: 50,
        flood_trickle: Some(Duration::from_secs(1)),
        flood_seconds: Duration::from_secs(20),
        flood_rate: 50.0,
        flood_lanes: 4,
        flood_keepalive: false,
        flood_key: true,
        quiet_wait: Duration::from_secs(20),
        noisy_pct: 20.0,
        out: None,
        keep: false,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--enclave" => a.enclave = value()?.into(),
            "--enclave-b" => a.enclave_b = Some(value()?.into()),
            "--label-a" => a.label_a = value()?,
            "--label-b" => a.label_b = value()?,
            "--enclave-limits" => {
                let line = value()?;
                if !line.contains('=') || line.contains('\n') {
                    bail!("--enclave-limits {line:?}: expected one `key = value` line");
                }
                a.enclave_limits.push(line);
            }
            "--enclave-audit" => {
                let line = value()?;
                if !line.contains('=') || line.contains('\n') {
                    bail!("--enclave-audit {line:?}: expected one `key = value` line");
                }
                a.enclave_audit.push(line);
            }
            "--enclave-log" => a.enclave_log = value()?,
            "--nginx" => a.nginx = Some(value()?.into()),
            "--nginx-workers" => a.nginx_workers = positive(flag, &value()?)?,
            "--parts" => {
                let v = value()?;
                let parts: Vec<&str> = v.split(',').map(str::trim).collect();
                if let Some(bad) = parts.iter().find(|p| !matches!(**p, "a" | "b" | "c" | "d")) {
                    bail!("--parts: unknown part `{bad}` (a, b, c; d runs with --enclave-b)");
                }
                a.part_a = parts.contains(&"a");
                a.part_b = parts.contains(&"b");
                a.part_c = parts.contains(&"c");
            }
            "--kinds" => {
                let v = value()?;
                a.kinds = v
                    .split(',')
                    .map(|k| match k.trim() {
                        "json" => Ok(Kind::Json),
                        "sse" => Ok(Kind::Sse),
                        other => bail!("--kinds: unknown kind `{other}` (json, sse)"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--seconds" => a.seconds = seconds(flag, &value()?)?,
            "--warmup" => a.warmup = seconds(flag, &value()?)?,
            "--concurrency" => a.concurrency = positive(flag, &value()?)?,
            "--client-threads" => a.client_threads = positive(flag, &value()?)?,
            "--open-share" => a.open_share = fraction(flag, &value()?)?,
            "--open-rate" => a.open_rate = Some(rate(flag, &value()?)?),
            "--open-connections" => a.open_connections = positive(flag, &value()?)?,
            "--flood-connections" => a.flood_connections = positive(flag, &value()?)?,
            "--flood-sources" => {
                a.flood_sources = u32::try_from(positive(flag, &value()?)?)
                    .ok()
                    .filter(|&n| n < 1 << 23)
                    .context("--flood-sources: at most 8388607 (127/8)")?;
            }
            "--flood-trickle-ms" => {
                let ms: u64 = value()?
                    .parse()
                    .context("--flood-trickle-ms: a whole number")?;
                a.flood_trickle = (ms > 0).then_some(Duration::from_millis(ms));
            }
            "--flood-seconds" => a.flood_seconds = seconds(flag, &value()?)?,
            "--flood-rate" => a.flood_rate = rate(flag, &value()?)?,
            "--flood-lanes" => a.flood_lanes = positive(flag, &value()?)?,
            "--flood-keepalive" => a.flood_keepalive = true,
            "--flood-no-key" => a.flood_key = false,
            "--quiet-wait" => a.quiet_wait = seconds(flag, &value()?)?,
            "--noisy-pct" => a.noisy_pct = rate(flag, &value()?)?,
            "--out" => a.out = Some(value()?.into()),
            "--keep" => a.keep = true,
            other if !other.starts_with('-') && a.out.is_none() => a.out = Some(other.into()),
            other => bail!("unknown argument `{other}`"),
        }
    }
    if a.kinds.is_empty() {
        bail!("--kinds: name at least one of json, sse");
    }
    Ok(Some(a))
}

fn positive(flag: &str, v: &str) -> anyhow::Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} {v}: expected a whole number above 0"),
    }
}

fn rate(flag: &str, v: &str) -> anyhow::Result<f64> {
    match v.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => bail!("{flag} {v}: expected a number above 0"),
    }
}

fn fraction(flag: &str, v: &str) -> anyhow::Result<f64> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => bail!("{flag} {v}: expected a number above 0 and at most 1"),
    }
}

fn seconds(flag: &str, v: &str) -> anyhow::Result<Duration> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s)),
        _ => bail!("{flag} {v}: expected seconds (0 or more)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn parses_flags_and_the_results_file() {
        let a = parse(&argv(
            "--enclave /a --enclave-b /b --parts a,c --kinds json --seconds 3 \
             --enclave-limits max_concurrency=8 --flood-trickle-ms 0 out.md",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(a.enclave, PathBuf::from("/a"));
        assert_eq!(a.enclave_b, Some(PathBuf::from("/b")));
        assert!(a.part_a && !a.part_b && a.part_c);
        assert_eq!(a.kinds, vec![Kind::Json]);
        assert_eq!(a.seconds, Duration::from_secs(3));
        assert_eq!(a.enclave_limits, vec!["max_concurrency=8".to_owned()]);
        assert_eq!(a.flood_trickle, None);
        assert_eq!(a.out, Some(PathBuf::from("out.md")));
        assert!(parse(&argv("--help")).unwrap().is_none());
        assert!(parse(&argv("--parts x")).is_err());
        assert!(parse(&argv("--enclave-limits nokey")).is_err());
        assert!(parse(&argv("--seconds")).is_err());
        assert!(parse(&argv("a.md b.md")).is_err());
    }
}
