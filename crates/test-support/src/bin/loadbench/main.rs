//! `loadbench`: what Enclave costs on the request path, next to nginx, on one machine in one run.
//!
//! ```text
//! loadbench [--enclave PATH] [--enclave-b PATH] [--parts a,b,c] [--seconds S] ... [RESULTS.md]
//! ```
//!
//! `scripts/load` builds the release binaries, installs nginx when missing and runs this; the
//! flags are listed by `loadbench --help` ([`args::USAGE`]). The run starts, in a temporary
//! directory, a static upstream (nginx answering chat completions from memory, 1 worker), a
//! reference proxy (nginx `proxy_pass` with keepalive to the upstream, `--nginx-workers`, default
//! 2), and `enclave serve` (the `--enclave` binary, and the `--enclave-b` binary when given) with
//! a real API key of a `SECRET//NOFORN` principal created by `enclave init` / `principal add` /
//! `key create`, two backends on the upstream and `ENCLAVE_LOG=warn`. Every request is a ~1 KB
//! chat body of a system prompt and three portion-marked `(U)` paragraphs with the session header
//! `X-Enclave-Classification: SECRET`, so Enclave pays for authentication, the label, the
//! spillage scan, routing and metrics. A pre-flight shows Enclave does that work: both response
//! kinds answered with the label echoed, a `(TS//SI)` paragraph refused as spillage, an unknown
//! key refused, `/metrics` served. Targets: `direct` (the upstream itself), `nginx` (through the
//! proxy) and each Enclave; the upstream's CPU is measured in every configuration.
//!
//! The parts, printed as Markdown (and written to `RESULTS.md` / `--out` if given):
//!
//! - **(a) CPU per request, closed loop**: each target and response kind (`json`, a chat
//!   completion; `sse`, the same streamed) at concurrency 1 and `--concurrency` (64), each
//!   connection sending its next request when the last is answered. Columns: `req/s`; `p50`,
//!   `p99` latency (send to end of body); `proxy CPU ms/req` = utime+stime of the proxy process
//!   (`/proc/<pid>/stat`; nginx: master + workers) over the cell / responses; `of it, audit
//!   thread` = the part spent by Enclave's audit writer thread (`enclave-audit`, from
//!   `/proc/<pid>/task/*/stat`), the group commits with their disk flushes; `upstream CPU
//!   ms/req` likewise for the upstream nginx; `client CPU ms/req` = this process (the load
//!   generator); `errors` = non-2xx, failed or timed-out exchanges; `other CPU %` = CPU used
//!   meanwhile by processes outside the benchmark, in % of one core. Then the ratio of Enclave's
//!   CPU per request to nginx's, per cell.
//! - **(b) open-loop latency**: Enclave's capacity is its closed-loop req/s at the high
//!   concurrency (from (a), or measured if (a) is not run; with two binaries the lower of the
//!   two). Each target is then driven at `--open-share` (50 %) of it (or `--open-rate`) by an
//!   open-loop generator ([`open`]: `--open-connections` keep-alive connections, requests on a
//!   fixed schedule, latency from each request's due time, so coordinated omission is
//!   corrected). Columns: requested and achieved rate; p50/p90/p99/p99.9/max; per process (proxy,
//!   upstream, generator) `CPU s/s` = CPU seconds / wall seconds of the cell and its share of all
//!   cores; `machine busy` = all cores' busy share. Then, per Enclave and kind, p99 and p99.9 of
//!   Enclave over nginx's against the targets ≤ 3× and ≤ 5×, beside the queueing-theory
//!   expectation (CPU ratio) × (1 − ρ_nginx) / (1 − ρ_enclave), where the CPU ratio is CPU per
//!   request Enclave / nginx in these cells and ρ is the proxy's share of all cores. A measured
//!   ratio far above the expectation points at head-of-line blocking, lock contention or pauses.
//! - **(c) slow-body flood**: a normal client (`--flood-rate`, 50 req/s, open loop over
//!   `--flood-lanes`, a new connection per request unless `--flood-keepalive`, from 127.0.0.1)
//!   measures Enclave's JSON latency for `--flood-seconds` without a flood, during a flood from
//!   one source address (127.0.0.2), and during a flood spread over `--flood-sources` addresses
//!   (127.0.0.2, 127.0.0.3, …: a per-IP connection cap meets many clients). The flood
//!   ([`flood`]) opens `--flood-connections` (500) connections that each send the head of a
//!   `POST /v1/chat/completions` with a valid API key (none with `--flood-no-key`) and
//!   `Content-Length: 100000`, then one body byte every `--flood-trickle-ms` (never with 0).
//!   Columns: connections opened (and not), how many the server closed and when (seconds after
//!   the flood began: first, median, last), the statuses it answered on them, how many were
//!   still open at the end; the normal client's p50/p99/p99.9/max and errors; Enclave's CPU share
//!   and peak VmRSS. Target: the normal client's p99 ≤ 50 ms under the flood.
//! - **(d) A/B** (with `--enclave-b`): both binaries run side by side and every Enclave cell is
//!   measured for each, alternately (A then B, then B then A in the next cell, so a drift of the
//!   machine's speed falls on both), with the same rates; the section sets their figures side by
//!   side with B/A ratios.
//! - **Memory**: each Enclave's VmRSS idle after start-up and the pre-flight, the peak sampled
//!   (every 0.2 s) during its cells, VmHWM at the end, and VmRSS idle again after the load.
//!
//! A quiet machine: before each cell the run waits up to `--quiet-wait` seconds for processes
//! outside the benchmark to use under 10 % of a core; a cell during which they used more than
//! `--noisy-pct` (20 %) is measured once more and, if still disturbed, flagged ⚠ in the report.
//! Enclave's configuration holds only keys every recent version knows (`listen`, `data_dir`,
//! `[storage]`, `[[backends]]`); `--enclave-limits 'key = value'` adds `[limits]` lines, so the
//! flood can be re-run with limits a newer server defines.

mod args;
mod closed;
mod flood;
mod http;
mod open;
mod procs;
mod report;
mod setup;
mod stats;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::args::Args;
use crate::closed::ClosedRun;
use crate::flood::{Fate, Flood};
use crate::http::request_bytes;
use crate::open::OpenRun;
use crate::procs::{Procs, RssSampler, Snapshot, status_kib, thread_ticks, ticks, ticks_of};
use crate::setup::{Enclave, Kind, Nginx, NginxRole};

/// Writes a progress line to stderr.
pub(crate) fn log(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "[loadbench] {msg}");
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match args::parse(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = writeln!(std::io::stdout().lock(), "{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr().lock(),
                "loadbench: {e:#}\n{}",
                args::USAGE
            );
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&format!("failed: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A place requests go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The static upstream itself.
    Direct,
    /// The upstream behind nginx `proxy_pass`.
    Nginx,
    /// The upstream behind the n-th Enclave.
    Enclave(usize),
}

/// What one cell measured, besides the generator's own result.
#[derive(Debug)]
pub(crate) struct Measured<T> {
    pub(crate) run: T,
    /// Responses the target served during the cell.
    pub(crate) served: u64,
    /// Wall seconds of the cell.
    pub(crate) wall: f64,
    /// CPU seconds of the proxy (none for `direct`), the upstream and this process.
    pub(crate) proxy_cpu: Option<f64>,
    pub(crate) upstream_cpu: f64,
    pub(crate) generator_cpu: f64,
    /// CPU seconds of Enclave's audit writer thread (`enclave-audit`), a part of `proxy_cpu`.
    pub(crate) audit_cpu: Option<f64>,
    /// CPU used by processes outside the benchmark, % of one core.
    pub(crate) other_pct: f64,
    /// Busy share of all cores (0–1).
    pub(crate) machine_busy: f64,
    /// Peak VmRSS sampled during the cell (Enclave targets), KiB.
    pub(crate) rss_peak_kib: Option<u64>,
}

impl<T> Measured<T> {
    /// CPU milliseconds per served request.
    pub(crate) fn ms_per_req(&self, cpu_s: f64) -> Option<f64> {
        #[expect(
            clippy::cast_precision_loss,
            reason = "request counts stay far below 2^52"
        )]
        let served = self.served as f64;
        (self.served > 0).then(|| cpu_s * 1000.0 / served)
    }

    /// CPU seconds per wall second.
    pub(crate) fn util(&self, cpu_s: f64) -> f64 {
        cpu_s / self.wall.max(1e-9)
    }
}

/// A closed-loop cell.
pub(crate) struct ClosedCell {
    pub(crate) target: Target,
    pub(crate) kind: Kind,
    pub(crate) concurrency: usize,
    pub(crate) m: Measured<ClosedRun>,
}

/// An open-loop cell.
pub(crate) struct OpenCell {
    pub(crate) target: Target,
    pub(crate) kind: Kind,
    pub(crate) rate: f64,
    pub(crate) m: Measured<OpenRun>,
}

/// What a flood scenario saw.
pub(crate) struct FloodRun {
    pub(crate) client: OpenRun,
    /// Each flood connection's fate (empty without a flood).
    pub(crate) fates: Vec<Fate>,
}

/// A flood scenario measured against one Enclave.
pub(crate) struct FloodCell {
    pub(crate) enclave: usize,
    /// Source addresses of the flood; `None`: no flood.
    pub(crate) sources: Option<u32>,
    pub(crate) m: Measured<FloodRun>,
}

/// An Enclave's resident memory, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    pub(crate) idle: u64,
    pub(crate) peak: u64,
    pub(crate) hwm: u64,
    pub(crate) after: u64,
}

/// Everything a run measured.
#[derive(Default)]
pub(crate) struct Results {
    pub(crate) closed: Vec<ClosedCell>,
    /// Closed-loop cells measured only for the capacity (when part a is not run).
    pub(crate) capacity_cells: Vec<ClosedCell>,
    /// Per kind: Enclave's capacity (req/s) and the open-loop rate.
    pub(crate) rates: Vec<(Kind, f64, f64)>,
    pub(crate) open: Vec<OpenCell>,
    pub(crate) flood: Vec<FloodCell>,
    pub(crate) memory: Vec<Memory>,
}

/// The running set-up.
pub(crate) struct Bench {
    pub(crate) args: Args,
    pub(crate) hz: f64,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) procs: Procs,
    pub(crate) upstream: Nginx,
    pub(crate) proxy: Nginx,
    pub(crate) enclaves: Vec<Enclave>,
    pub(crate) nginx_bin: PathBuf,
}

fn run(args: &Args) -> anyhow::Result<()> {
    let started = report::utc_now();
    let t0 = Instant::now();
    let nginx_bin = find_nginx(args)?;
    let mut binaries = vec![(args.label_a.clone(), args.enclave.clone())];
    if let Some(b) = &args.enclave_b {
        binaries.push((args.label_b.clone(), b.clone()));
    }
    for (_, b) in &binaries {
        if !b.is_file() {
            bail!(
                "{} is not a file: build it (cargo build --release -p enclave) or pass --enclave",
                b.display()
            );
        }
    }
    let tmp = std::env::temp_dir().join(format!("enclave-loadbench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    // nginx workers may run as an unprivileged user and must reach their prefix.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    }
    let result = run_in(args, &tmp, &nginx_bin, &binaries, &started, t0);
    if args.keep || result.is_err() {
        log(&format!("kept {}", tmp.display()));
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn run_in(
    args: &Args,
    tmp: &Path,
    nginx_bin: &Path,
    binaries: &[(String, PathBuf)],
    started: &str,
    t0: Instant,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut procs = Procs::default();
    let upstream = setup::start_nginx(
        &rt,
        &mut procs,
        nginx_bin,
        NginxRole::Upstream,
        &tmp.join("upstream"),
    )?;
    let proxy = setup::start_nginx(
        &rt,
        &mut procs,
        nginx_bin,
        NginxRole::Proxy {
            upstream_port: upstream.addr.port(),
            workers: args.nginx_workers,
        },
        &tmp.join("proxy"),
    )?;
    log(&format!(
        "upstream nginx on {}, proxy nginx on {}",
        upstream.addr, proxy.addr
    ));
    let mut enclaves = Vec::new();
    for (i, (label, binary)) in binaries.iter().enumerate() {
        let e = setup::start_enclave(
            &rt,
            &mut procs,
            &setup::EnclaveSpec {
                name: label,
                binary,
                dir: &tmp.join(format!("enclave-{i}")),
                upstream_port: upstream.addr.port(),
                limits: &args.enclave_limits,
                audit: &args.enclave_audit,
                log_level: &args.enclave_log,
            },
        )?;
        log(&format!(
            "enclave {label} ({}) on {}",
            binary.display(),
            e.addr
        ));
        let problems = setup::preflight(&rt, &e);
        if !problems.is_empty() {
            for p in &problems {
                log(&format!("pre-flight of enclave {label}: {p}"));
            }
            bail!("enclave {label} does not behave as the benchmark assumes (see above)");
        }
        enclaves.push(e);
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut results = Results::default();
    for e in &enclaves {
        results.memory.push(Memory {
            idle: status_kib(e.pid, "VmRSS").unwrap_or(0),
            ..Memory::default()
        });
    }
    let bench = Bench {
        args: args.clone(),
        hz: procs::clock_ticks(),
        rt,
        procs,
        upstream,
        proxy,
        enclaves,
        nginx_bin: nginx_bin.to_owned(),
    };
    bench.check_targets()?;
    if args.part_a {
        bench.part_a(&mut results)?;
    }
    if args.part_b {
        bench.part_b(&mut results)?;
    }
    if args.part_c {
        bench.part_c(&mut results)?;
    }
    for (i, (e, mem)) in bench
        .enclaves
        .iter()
        .zip(results.memory.iter_mut())
        .enumerate()
    {
        let t = Target::Enclave(i);
        mem.hwm = status_kib(e.pid, "VmHWM").unwrap_or(0);
        let closed = results.closed.iter().chain(&results.capacity_cells);
        mem.peak = closed
            .filter(|c| c.target == t)
            .filter_map(|c| c.m.rss_peak_kib)
            .chain(
                results
                    .open
                    .iter()
                    .filter(|c| c.target == t)
                    .filter_map(|c| c.m.rss_peak_kib),
            )
            .chain(
                results
                    .flood
                    .iter()
                    .filter(|c| c.enclave == i)
                    .filter_map(|c| c.m.rss_peak_kib),
            )
            .max()
            .unwrap_or(0);
    }
    std::thread::sleep(Duration::from_secs(1));
    for (e, mem) in bench.enclaves.iter().zip(results.memory.iter_mut()) {
        mem.after = status_kib(e.pid, "VmRSS").unwrap_or(0);
    }
    let text = report::render(&bench, &results, started, t0.elapsed());
    {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        out.flush()?;
    }
    if let Some(path) = &args.out {
        std::fs::write(path, &text).with_context(|| format!("write {}", path.display()))?;
        log(&format!("wrote {}", path.display()));
    }
    let mut bench = bench;
    bench.procs.stop_all();
    Ok(())
}

fn find_nginx(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.nginx {
        return Ok(p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .context("nginx not found: install it (apt-get install nginx) or pass --nginx PATH")
}

// === impl Bench ===

impl Bench {
    fn addr(&self, t: Target) -> std::net::SocketAddr {
        match t {
            Target::Direct => self.upstream.addr,
            Target::Nginx => self.proxy.addr,
            Target::Enclave(i) => self.enclaves.get(i).map_or(self.upstream.addr, |e| e.addr),
        }
    }

    /// The serialized chat request for a target.
    fn request(&self, t: Target, kind: Kind) -> Arc<[u8]> {
        let path = match t {
            Target::Direct | Target::Nginx => format!("/{}/v1/chat/completions", kind.name()),
            Target::Enclave(_) => "/v1/chat/completions".to_owned(),
        };
        let key = self.key(t);
        request_bytes(
            "POST",
            &self.addr(t).to_string(),
            &path,
            &setup::headers(key),
            setup::request_body(kind).as_bytes(),
        )
        .into()
    }

    fn key(&self, t: Target) -> &str {
        let i = match t {
            Target::Enclave(i) => i,
            Target::Direct | Target::Nginx => 0,
        };
        self.enclaves.get(i).map_or("enk_none", |e| e.key.as_str())
    }

    /// The name of a target in the report.
    pub(crate) fn name(&self, t: Target) -> String {
        match t {
            Target::Direct => "direct".to_owned(),
            Target::Nginx => "nginx".to_owned(),
            Target::Enclave(_) if self.enclaves.len() == 1 => "enclave".to_owned(),
            Target::Enclave(i) => format!(
                "enclave {}",
                self.enclaves.get(i).map_or("?", |e| e.name.as_str())
            ),
        }
    }

    fn proxy_pids(&self, t: Target) -> Vec<u32> {
        match t {
            Target::Direct => Vec::new(),
            Target::Nginx => nginx_pids(&self.proxy),
            Target::Enclave(i) => self.enclaves.get(i).map(|e| e.pid).into_iter().collect(),
        }
    }

    /// Targets in measuring order for the `n`-th cell: the references, then the Enclaves, whose
    /// order alternates from cell to cell.
    fn targets(&self, n: usize, references: bool) -> Vec<Target> {
        let mut out = if references {
            vec![Target::Direct, Target::Nginx]
        } else {
            Vec::new()
        };
        let mut es: Vec<Target> = (0..self.enclaves.len()).map(Target::Enclave).collect();
        if n % 2 == 1 {
            es.reverse();
        }
        out.extend(es);
        out
    }

    /// Checks every target answers each kind as the benchmark expects.
    fn check_targets(&self) -> anyhow::Result<()> {
        for &kind in &self.args.kinds {
            for t in self.targets(0, true) {
                let r = setup::fetch(&self.rt, self.addr(t), &self.request(t, kind))?;
                let body = String::from_utf8_lossy(&r.body);
                let ok = match kind {
                    Kind::Json => body.contains("\"chat.completion\""),
                    Kind::Sse => body.ends_with("data: [DONE]\n\n"),
                };
                if r.status != 200 || !ok {
                    bail!(
                        "{} {}: status {}: {}",
                        self.name(t),
                        kind.name(),
                        r.status,
                        body.chars().take(300).collect::<String>()
                    );
                }
            }
        }
        Ok(())
    }

    /// Measures one cell: runs `run` (which returns its result and the responses served) and
    /// accounts the CPU time of the proxy, the upstream, this process and the rest of the
    /// machine meanwhile. With `--quiet-wait`, waits for quiet first and measures a disturbed
    /// cell once more, keeping the less disturbed of the two.
    fn measure<T>(
        &self,
        label: &str,
        target: Option<Target>,
        run: &mut dyn FnMut() -> anyhow::Result<(T, u64)>,
        describe: &dyn Fn(&Measured<T>) -> String,
    ) -> anyhow::Result<Measured<T>> {
        let attempts = if self.args.quiet_wait.is_zero() { 1 } else { 2 };
        let mut best: Option<Measured<T>> = None;
        for attempt in 0..attempts {
            if !self.args.quiet_wait.is_zero() {
                procs::wait_for_quiet(self.args.quiet_wait, &|| self.procs.all_pids(), self.hz);
            }
            log(&format!(
                "{label}{}",
                if attempt > 0 {
                    " (again: disturbed)"
                } else {
                    ""
                }
            ));
            let m = self.measure_once(target, run)?;
            log(&format!(
                "  {}; other processes {:.0} % of a core",
                describe(&m),
                m.other_pct
            ));
            if let Some(t) = target {
                for pid in self.proxy_pids(t) {
                    if ticks(pid).is_none() {
                        let log = match t {
                            Target::Enclave(i) => {
                                self.enclaves.get(i).map(|e| e.log.display().to_string())
                            }
                            Target::Direct | Target::Nginx => None,
                        };
                        bail!(
                            "{} (pid {pid}) is gone; its log: {}",
                            self.name(t),
                            log.unwrap_or_else(|| "the kept directory".to_owned())
                        );
                    }
                }
            }
            let better = best.as_ref().is_none_or(|b| m.other_pct < b.other_pct);
            if better {
                best = Some(m);
            }
            if best
                .as_ref()
                .is_some_and(|b| b.other_pct <= self.args.noisy_pct)
            {
                break;
            }
        }
        best.context("no measurement")
    }

    fn measure_once<T>(
        &self,
        target: Option<Target>,
        run: &mut dyn FnMut() -> anyhow::Result<(T, u64)>,
    ) -> anyhow::Result<Measured<T>> {
        let proxy = target.map(|t| self.proxy_pids(t)).unwrap_or_default();
        let upstream = nginx_pids(&self.upstream);
        let me = std::process::id();
        let enclave_pid = match target {
            Some(Target::Enclave(i)) => self.enclaves.get(i).map(|e| e.pid),
            _ => None,
        };
        let sampler = enclave_pid.map(RssSampler::start);
        let audit_ticks = || enclave_pid.and_then(|p| thread_ticks(p, "enclave-audit"));
        let a0 = audit_ticks();
        let (p0, u0, g0) = (
            ticks_of(&proxy),
            ticks_of(&upstream),
            ticks(me).unwrap_or(0),
        );
        let s0 = Snapshot::take(&self.procs.all_pids());
        let (r, served) = run()?;
        let s1 = Snapshot::take(&self.procs.all_pids());
        let a1 = audit_ticks();
        let (p1, u1, g1) = (
            ticks_of(&proxy),
            ticks_of(&upstream),
            ticks(me).unwrap_or(0),
        );
        let rss_peak_kib = sampler.map(RssSampler::finish);
        let (other_pct, machine_busy) = s0.since(&s1, self.hz);
        #[expect(
            clippy::cast_precision_loss,
            reason = "tick counts stay far below 2^52"
        )]
        let cpu = |a: u64, b: u64| b.saturating_sub(a) as f64 / self.hz;
        Ok(Measured {
            run: r,
            served,
            wall: s0.elapsed_to(&s1),
            proxy_cpu: (!proxy.is_empty()).then(|| cpu(p0, p1)),
            upstream_cpu: cpu(u0, u1),
            generator_cpu: cpu(g0, g1),
            audit_cpu: a0.zip(a1).map(|(a, b)| cpu(a, b)),
            other_pct,
            machine_busy,
            rss_peak_kib,
        })
    }

    fn closed_cell(
        &self,
        t: Target,
        kind: Kind,
        conc: usize,
        duration: Duration,
    ) -> anyhow::Result<ClosedCell> {
        let threads = if conc == 1 {
            1
        } else {
            self.args.client_threads
        };
        let request = self.request(t, kind);
        let addr = self.addr(t);
        let m = self.measure(
            &format!(
                "{} {} c{conc}: {:.0} s closed loop",
                self.name(t),
                kind.name(),
                duration.as_secs_f64()
            ),
            Some(t),
            &mut || {
                let r = closed::run(addr, request.clone(), conc, threads, duration)?;
                let n = r.responses;
                Ok((r, n))
            },
            &|m| {
                format!(
                    "{:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, proxy CPU {} ms/req{}, {} errors",
                    m.run.rate(),
                    m.run.latency.p50,
                    m.run.latency.p99,
                    m.proxy_cpu
                        .and_then(|c| m.ms_per_req(c))
                        .map_or("—".to_owned(), |v| format!("{v:.3}")),
                    m.audit_cpu
                        .and_then(|c| m.ms_per_req(c))
                        .map_or(String::new(), |v| format!(" (audit thread {v:.4})")),
                    m.run.errors
                )
            },
        )?;
        Ok(ClosedCell {
            target: t,
            kind,
            concurrency: conc,
            m,
        })
    }

    fn warm_closed(&self, t: Target, kind: Kind) -> anyhow::Result<()> {
        if self.args.warmup.is_zero() {
            return Ok(());
        }
        let r = closed::run(
            self.addr(t),
            self.request(t, kind),
            self.args.concurrency,
            self.args.client_threads,
            self.args.warmup,
        )?;
        if r.errors > 0 {
            log(&format!(
                "warm-up of {} {}: {} errors (first: {})",
                self.name(t),
                kind.name(),
                r.errors,
                r.first_error.unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// (a) Closed loop at concurrency 1 and the high concurrency, every target and kind.
    fn part_a(&self, results: &mut Results) -> anyhow::Result<()> {
        let mut n = 0;
        for &kind in &self.args.kinds {
            for t in self.targets(0, true) {
                self.warm_closed(t, kind)?;
            }
            for conc in [1, self.args.concurrency] {
                for t in self.targets(n, true) {
                    results
                        .closed
                        .push(self.closed_cell(t, kind, conc, self.args.seconds)?);
                }
                n += 1;
            }
        }
        Ok(())
    }

    /// Enclave's capacity for a kind: the lowest closed-loop req/s at the high concurrency
    /// among the Enclaves, measured now if part a did not.
    fn capacity(&self, kind: Kind, results: &mut Results) -> anyhow::Result<f64> {
        let high = self.args.concurrency;
        let from = |cells: &[ClosedCell]| {
            cells
                .iter()
                .filter(|c| {
                    matches!(c.target, Target::Enclave(_))
                        && c.kind == kind
                        && c.concurrency == high
                })
                .map(|c| c.m.run.rate())
                .fold(None, |a: Option<f64>, r| Some(a.map_or(r, |a| a.min(r))))
        };
        if let Some(c) = from(&results.closed).or_else(|| from(&results.capacity_cells)) {
            return Ok(c);
        }
        for (i, t) in self.targets(0, false).into_iter().enumerate() {
            if i == 0 {
                self.warm_closed(t, kind)?;
            }
            let cell = self.closed_cell(t, kind, high, self.args.seconds)?;
            results.capacity_cells.push(cell);
        }
        from(&results.capacity_cells).context("no Enclave to measure the capacity of")
    }

    /// (b) Open loop at a share of Enclave's capacity, every target and kind.
    fn part_b(&self, results: &mut Results) -> anyhow::Result<()> {
        for (n, &kind) in self.args.kinds.iter().enumerate() {
            let capacity = if self.enclaves.is_empty() {
                0.0
            } else {
                self.capacity(kind, results)?
            };
            let rate = self
                .args
                .open_rate
                .unwrap_or_else(|| round_rate(capacity * self.args.open_share));
            log(&format!(
                "{} open loop at {rate:.0} req/s (Enclave's capacity {capacity:.0} req/s)",
                kind.name()
            ));
            results.rates.push((kind, capacity, rate));
            for t in self.targets(n, true) {
                let plan = open::Plan {
                    addr: self.addr(t),
                    request: self.request(t, kind),
                    connections: self.args.open_connections,
                    rate,
                    duration: self.args.warmup,
                    drain: Duration::from_secs(10),
                    reconnect: false,
                };
                if !self.args.warmup.is_zero() {
                    open::run(&plan)?;
                }
                let plan = open::Plan {
                    duration: self.args.seconds,
                    ..plan
                };
                let m = self.measure(
                    &format!(
                        "{} {} open loop at {rate:.0} req/s for {:.0} s",
                        self.name(t),
                        kind.name(),
                        self.args.seconds.as_secs_f64()
                    ),
                    Some(t),
                    &mut || {
                        let r = open::run(&plan)?;
                        let n = r.responses;
                        Ok((r, n))
                    },
                    &|m| open_summary(&m.run),
                )?;
                results.open.push(OpenCell {
                    target: t,
                    kind,
                    rate,
                    m,
                });
            }
        }
        Ok(())
    }

    /// (c) The normal client's latency without a flood, during a flood from one source address,
    /// and during one spread over `--flood-sources` addresses.
    fn part_c(&self, results: &mut Results) -> anyhow::Result<()> {
        let mut scenarios = vec![None, Some(1)];
        if self.args.flood_sources > 1 {
            scenarios.push(Some(self.args.flood_sources));
        }
        for (n, sources) in scenarios.into_iter().enumerate() {
            for t in self.targets(n, false) {
                let Target::Enclave(i) = t else { continue };
                let cell = self.flood_cell(i, sources)?;
                results.flood.push(cell);
                // Let the server let go of what the flood left behind.
                std::thread::sleep(Duration::from_secs(2));
            }
        }
        Ok(())
    }

    fn flood_cell(&self, i: usize, sources: Option<u32>) -> anyhow::Result<FloodCell> {
        let t = Target::Enclave(i);
        let a = &self.args;
        let client = open::Plan {
            addr: self.addr(t),
            request: self.request(t, Kind::Json),
            connections: a.flood_lanes,
            rate: a.flood_rate,
            duration: a.flood_seconds,
            drain: Duration::from_secs(10),
            reconnect: !a.flood_keepalive,
        };
        let flood_plan = sources.map(|n| flood::Plan {
            target: self.addr(t),
            connections: a.flood_connections,
            sources: (0..n).map(flood::source_address).collect(),
            head: self.flood_head(t).into(),
            trickle: a.flood_trickle,
        });
        let label = match sources {
            None => format!(
                "{} normal client at {:.0} req/s, no flood",
                self.name(t),
                a.flood_rate
            ),
            Some(n) => format!(
                "{} normal client at {:.0} req/s during a flood of {} slow-body connections from {n} address(es)",
                self.name(t),
                a.flood_rate,
                a.flood_connections
            ),
        };
        let m = self.measure(
            &label,
            Some(t),
            &mut || {
                let flood = flood_plan.as_ref().map(Flood::start);
                if let Some(f) = &flood {
                    let tried = f.wait_opened(a.flood_connections, Duration::from_secs(10));
                    log(&format!(
                        "  flood: {tried} connections tried after {:.1} s",
                        f.started.elapsed().as_secs_f64()
                    ));
                }
                let client = open::run(&client);
                let fates = match flood {
                    Some(f) => f.stop()?,
                    None => Vec::new(),
                };
                let client = client?;
                let n = client.responses;
                Ok((FloodRun { client, fates }, n))
            },
            &|m| {
                let closed = m
                    .run
                    .fates
                    .iter()
                    .filter(|f| matches!(f, Fate::Closed(..)))
                    .count();
                format!(
                    "{}; flood connections closed by the server: {closed}",
                    open_summary(&m.run.client)
                )
            },
        )?;
        Ok(FloodCell {
            enclave: i,
            sources,
            m,
        })
    }

    /// The head of a slow-body request: a chat completion announcing 100,000 body bytes.
    fn flood_head(&self, t: Target) -> Vec<u8> {
        let mut head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {}\r\n",
            self.addr(t)
        );
        for (k, v) in setup::headers(self.key(t)) {
            if k == "authorization" && !self.args.flood_key {
                continue;
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("content-length: 100000\r\n\r\n");
        head.into_bytes()
    }
}

fn nginx_pids(n: &Nginx) -> Vec<u32> {
    let mut v = vec![n.pid];
    v.extend(procs::children(n.pid));
    v
}

fn open_summary(r: &OpenRun) -> String {
    format!(
        "{:.0} req/s achieved, p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms, {} errors{}",
        r.rate(),
        r.latency.p50,
        r.latency.p99,
        r.latency.p999,
        r.latency.max,
        r.errors(),
        r.first_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})"))
    )
}

/// Rounds a rate to a step that reads well: 100s above 1,000 req/s, 10s above 100.
fn round_rate(x: f64) -> f64 {
    let step = if x >= 1000.0 {
        100.0
    } else if x >= 100.0 {
        10.0
    } else {
        1.0
    };
    ((x / step).round() * step).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_to_readable_steps() {
        assert!((round_rate(13_449.0) - 13_400.0).abs() < 1e-9);
        assert!((round_rate(456.0) - 460.0).abs() < 1e-9);
        assert!((round_rate(0.2) - 1.0).abs() < 1e-9);
    }
}
