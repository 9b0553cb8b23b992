//! The Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::flood::Fate;
use crate::setup::{Kind, request_body};
use crate::{Bench, Measured, Results, Target};

/// Targets of issue 16 part (b) and (c).
const P99_RATIO_MAX: f64 = 3.0;
const P999_RATIO_MAX: f64 = 5.0;
const FLOOD_P99_MAX_MS: f64 = 50.0;

/// The time now, UTC, to the minute (`date -u`).
pub(crate) fn utc_now() -> String {
    date(&["-u", "+%Y-%m-%d %H:%M"])
}

fn date(args: &[&str]) -> String {
    Command::new("date")
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Renders the whole report.
pub(crate) fn render(b: &Bench, r: &Results, started: &str, wall: Duration) -> String {
    let mut out = String::new();
    header(&mut out, b, started, wall);
    if !r.closed.is_empty() {
        part_a(&mut out, b, r);
    }
    if !r.open.is_empty() {
        part_b(&mut out, b, r);
    }
    if !r.flood.is_empty() {
        part_c(&mut out, b, r);
    }
    if b.enclaves.len() > 1 {
        part_d(&mut out, b, r);
    }
    memory(&mut out, b, r);
    out
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn header(out: &mut String, b: &Bench, started: &str, wall: Duration) {
    let a = &b.args;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let nginx_v = Command::new(&b.nginx_bin)
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .trim()
                .replace("nginx version: ", "")
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "Run {started} UTC, {} s per cell in (a) and (b), {} s per flood scenario in (c), {:.0} s in all. \
         {} cores ({cpu}), Linux {}, {nginx_v}.",
        secs(a.seconds),
        secs(a.flood_seconds),
        wall.as_secs_f64(),
        cores(),
        kernel.trim(),
    );
    for (i, e) in b.enclaves.iter().enumerate() {
        let _ = writeln!(
            out,
            "{}",
            binary_note(&b.name(Target::Enclave(i)), &e.binary)
        );
    }
    let mut limits = if a.enclave_limits.is_empty() {
        "defaults".to_owned()
    } else {
        a.enclave_limits
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !a.enclave_audit.is_empty() {
        let lines: Vec<String> = a.enclave_audit.iter().map(|l| format!("`{l}`")).collect();
        let _ = write!(limits, ", `[audit]` {}", lines.join(", "));
    }
    let _ = writeln!(
        out,
        "\nUpstream: nginx `return 200` from memory, 1 worker. nginx: `proxy_pass` with keepalive, {} \
         workers. Enclave: `ENCLAVE_LOG={}`, `[limits]` {limits}, a real API key, session `SECRET`, \
         spillage scan of a {}-byte chat request (three `(U)` paragraphs), routing, metrics. Load \
         generator: `loadbench` itself, in this process (its CPU is the client/generator column). \
         CPU figures are utime+stime from `/proc/<pid>/stat` (nginx: master + workers). Other CPU \
         %: processes outside the benchmark, in % of one core (the machine has {} %); ⚠ marks cells \
         above {:.0} %, whose figures are unreliable.\n",
        a.nginx_workers,
        a.enclave_log,
        request_body(Kind::Json).len(),
        cores() * 100,
        a.noisy_pct,
    );
}

fn binary_note(name: &str, path: &Path) -> String {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    #[expect(clippy::cast_precision_loss, reason = "a file size")]
    let mib = size as f64 / 1_048_576.0;
    let built = date(&["-u", "-r", &path.display().to_string(), "+%Y-%m-%d %H:%M"]);
    format!(
        "{name}: `{}`, {mib:.1} MiB, built {built} UTC.",
        path.display()
    )
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 1e-9 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

fn num(v: f64) -> String {
    #[expect(clippy::cast_possible_truncation, reason = "rates are far below 2^63")]
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

fn other<T>(b: &Bench, m: &Measured<T>) -> String {
    let flag = if m.other_pct > b.args.noisy_pct {
        " ⚠"
    } else {
        ""
    };
    format!("{:.0}{flag}", m.other_pct)
}

fn share(util: f64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "a core count")]
    let c = cores() as f64;
    format!("{util:.2} ({:.0} %)", util / c * 100.0)
}

fn part_a(out: &mut String, b: &Bench, r: &Results) {
    let _ = writeln!(
        out,
        "### (a) CPU per request, closed loop\n\nEach connection sends its next request when the last is \
         answered; 1 client thread at concurrency 1, {} at {}. Latency: from sending a request to the end \
         of its body. CPU ms/req: the process's CPU time over the cell / responses.\n",
        b.args.client_threads, b.args.concurrency
    );
    let _ = writeln!(
        out,
        "| target | response | concurrency | req/s | p50 ms | p99 ms | proxy CPU ms/req | of it, audit thread \
         | upstream CPU ms/req | client CPU ms/req | errors | other CPU % |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut rows: Vec<&crate::ClosedCell> = r.closed.iter().collect();
    rows.sort_by_key(|c| (kind_order(c.kind), target_order(c.target), c.concurrency));
    for c in rows {
        let m = &c.m;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} | {} | {} |",
            b.name(c.target),
            c.kind.name(),
            c.concurrency,
            num(m.run.rate()),
            m.run.latency.p50,
            m.run.latency.p99,
            opt(m.proxy_cpu.and_then(|p| m.ms_per_req(p)), 3),
            opt(m.audit_cpu.and_then(|p| m.ms_per_req(p)), 4),
            opt(m.ms_per_req(m.upstream_cpu), 3),
            opt(m.ms_per_req(m.generator_cpu), 3),
            m.run.errors,
            other(b, m),
        );
    }
    let errors: Vec<String> = r
        .closed
        .iter()
        .filter_map(|c| {
            Some(format!(
                "{} {} c{}: {}",
                b.name(c.target),
                c.kind.name(),
                c.concurrency,
                c.m.run.first_error.as_ref()?
            ))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nFirst errors: {}.", errors.join("; "));
    }
    let _ = writeln!(
        out,
        "\nEnclave's CPU per request over nginx's (same kind, same concurrency):\n\n\
         | response | concurrency | Enclave | Enclave CPU ms/req | nginx CPU ms/req | ratio |\n| --- | ---: | --- | ---: | ---: | ---: |"
    );
    for &kind in &b.args.kinds {
        for conc in [1, b.args.concurrency] {
            let find = |t: Target| {
                r.closed
                    .iter()
                    .find(|c| c.target == t && c.kind == kind && c.concurrency == conc)
            };
            let Some(n) = find(Target::Nginx) else {
                continue;
            };
            let n_ms = n.m.proxy_cpu.and_then(|p| n.m.ms_per_req(p));
            for i in 0..b.enclaves.len() {
                let Some(e) = find(Target::Enclave(i)) else {
                    continue;
                };
                let e_ms = e.m.proxy_cpu.and_then(|p| e.m.ms_per_req(p));
                let ratio = e_ms.zip(n_ms).map(|(e, n)| e / n.max(1e-9));
                let _ = writeln!(
                    out,
                    "| {} | {conc} | {} | {} | {} | {}× |",
                    kind.name(),
                    b.name(Target::Enclave(i)),
                    opt(e_ms, 3),
                    opt(n_ms, 3),
                    opt(ratio, 2)
                );
            }
        }
    }
    out.push('\n');
}

fn kind_order(k: Kind) -> u8 {
    match k {
        Kind::Json => 0,
        Kind::Sse => 1,
    }
}

fn target_order(t: Target) -> usize {
    match t {
        Target::Direct => 0,
        Target::Nginx => 1,
        Target::Enclave(i) => 2 + i,
    }
}

fn part_b(out: &mut String, b: &Bench, r: &Results) {
    let a = &b.args;
    let _ = writeln!(out, "### (b) Open-loop latency at a fixed arrival rate\n");
    for (kind, capacity, rate) in &r.rates {
        let how = match a.open_rate {
            Some(_) => "set with --open-rate".to_owned(),
            None => format!("{:.0} % of it", a.open_share * 100.0),
        };
        let _ = writeln!(
            out,
            "- {}: Enclave's capacity {} req/s (closed loop at concurrency {}{}); rate {} req/s ({how}).",
            kind.name(),
            num(*capacity),
            a.concurrency,
            if b.enclaves.len() > 1 {
                ", the lower of the two binaries"
            } else {
                ""
            },
            num(*rate)
        );
    }
    let lag99 = r
        .open
        .iter()
        .map(|c| c.m.run.dispatch_lag_p99_ms)
        .fold(0.0, f64::max);
    let lagmax = r
        .open
        .iter()
        .map(|c| c.m.run.dispatch_lag_max_ms)
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "\n{} keep-alive connections; request n is due at t0 + n/rate on connection n mod {}; latency runs from \
         when a request was due to the end of its response, so a stalled connection is charged for the requests \
         queued behind it (coordinated omission corrected, as in wrk2). {} s of warm-up at the same rate precede \
         each cell. The generator handed requests over up to {lag99:.2} ms late at p99 and {lagmax:.2} ms at most \
         (counted in the latencies). CPU s/s: CPU seconds / wall seconds of the cell (in brackets: share of the \
         {} cores); machine busy: all cores. Achieved below requested: the target or the generator could not keep up.\n",
        a.open_connections,
        a.open_connections,
        secs(a.warmup),
        cores()
    );
    let _ = writeln!(
        out,
        "| target | response | rate req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | proxy CPU ms/req \
         | proxy CPU s/s | upstream CPU s/s | generator CPU s/s | machine busy | errors | other CPU % |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut rows: Vec<&crate::OpenCell> = r.open.iter().collect();
    rows.sort_by_key(|c| (kind_order(c.kind), target_order(c.target)));
    for c in rows {
        let (m, l) = (&c.m, &c.m.run.latency);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} | {:.0} % | {} | {} |",
            b.name(c.target),
            c.kind.name(),
            num(c.rate),
            num(m.run.rate()),
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            opt(m.proxy_cpu.and_then(|p| m.ms_per_req(p)), 3),
            m.proxy_cpu.map_or("—".to_owned(), |p| share(m.util(p))),
            share(m.util(m.upstream_cpu)),
            share(m.util(m.generator_cpu)),
            m.machine_busy * 100.0,
            m.run.errors(),
            other(b, m),
        );
    }
    let _ = writeln!(
        out,
        "\nEnclave's tail over nginx's at the same rate, beside what queueing alone predicts: (CPU ratio) × \
         (1 − ρ_nginx) / (1 − ρ_enclave), with the CPU ratio of these cells and ρ the proxy's share of the \
         {} cores. A measured ratio far above it points at head-of-line blocking, lock contention or pauses.\n\n\
         | response | Enclave | p99 ratio | ≤ {P99_RATIO_MAX:.0}× | p99.9 ratio | ≤ {P999_RATIO_MAX:.0}× | CPU ratio | ρ nginx | ρ Enclave | expected ratio |\n\
         | --- | --- | ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |",
        cores()
    );
    #[expect(clippy::cast_precision_loss, reason = "a core count")]
    let c = cores() as f64;
    for &kind in &b.args.kinds {
        let find = |t: Target| r.open.iter().find(|o| o.target == t && o.kind == kind);
        let Some(n) = find(Target::Nginx) else {
            continue;
        };
        for i in 0..b.enclaves.len() {
            let Some(e) = find(Target::Enclave(i)) else {
                continue;
            };
            let p99 = e.m.run.latency.p99 / n.m.run.latency.p99.max(1e-9);
            let p999 = e.m.run.latency.p999 / n.m.run.latency.p999.max(1e-9);
            let cpu = |o: &crate::OpenCell| o.m.proxy_cpu.and_then(|p| o.m.ms_per_req(p));
            let rho = |o: &crate::OpenCell| o.m.proxy_cpu.map(|p| o.m.util(p) / c);
            let ratio = cpu(e).zip(cpu(n)).map(|(e, n)| e / n.max(1e-9));
            let expected = match (ratio, rho(n), rho(e)) {
                (Some(cr), Some(rn), Some(re)) if re < 1.0 => Some(cr * (1.0 - rn) / (1.0 - re)),
                _ => None,
            };
            let _ = writeln!(
                out,
                "| {} | {} | {p99:.2}× | {} | {p999:.2}× | {} | {} | {} | {} | {} |",
                kind.name(),
                b.name(Target::Enclave(i)),
                met(p99 <= P99_RATIO_MAX),
                met(p999 <= P999_RATIO_MAX),
                opt(ratio, 2),
                opt(rho(n), 2),
                opt(rho(e), 2),
                opt(expected, 2).replace('—', "— (ρ ≥ 1)"),
            );
        }
    }
    out.push('\n');
}

fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

fn part_c(out: &mut String, b: &Bench, r: &Results) {
    let a = &b.args;
    let trickle = a
        .flood_trickle
        .map_or("never sends a body byte".to_owned(), |t| {
            format!("then sends one body byte every {} ms", t.as_millis())
        });
    let _ = writeln!(
        out,
        "### (c) Slow-body flood\n\nA normal client sends Enclave JSON chat requests at {} req/s open loop over {} lanes \
         ({}) from 127.0.0.1 for {} s: without a flood, then while {} flood connections each send the head of a \
         `POST /v1/chat/completions` with `Content-Length: 100000` and {} ({}), from one source address (127.0.0.2) \
         or spread over several (127.0.0.2, 127.0.0.3, …, so a per-IP cap meets many clients). Closed: the server \
         ended the connection (FIN or reset) — when, in seconds after the flood began; answered: the statuses it \
         sent on flood connections first. Target: the normal client's p99 ≤ {FLOOD_P99_MAX_MS:.0} ms under the flood.\n",
        num(a.flood_rate),
        a.flood_lanes,
        if a.flood_keepalive {
            "keep-alive connections"
        } else {
            "a new connection per request"
        },
        secs(a.flood_seconds),
        a.flood_connections,
        trickle,
        if a.flood_key {
            "with a valid API key"
        } else {
            "without an API key"
        },
    );
    let _ = writeln!(
        out,
        "| Enclave | flood from | opened | not opened | closed by the server | closed at s (first / median / last) \
         | answered | open at the end | client p50 ms | p99 ms | p99.9 ms | max ms | client errors | Enclave CPU s/s \
         | peak VmRSS MiB | other CPU % |\n\
         | --- | --- | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    let mut checks = Vec::new();
    let mut rows: Vec<&crate::FloodCell> = r.flood.iter().collect();
    rows.sort_by_key(|c| (c.sources, c.enclave));
    for c in rows {
        let m = &c.m;
        let fates = &m.run.fates;
        let mut closed_at: Vec<f64> = fates
            .iter()
            .filter_map(|f| match f {
                Fate::Closed(at, _) => Some(at.as_secs_f64()),
                Fate::NotOpened(..) | Fate::Open(_) => None,
            })
            .collect();
        closed_at.sort_by(f64::total_cmp);
        let not_opened: Vec<&str> = fates
            .iter()
            .filter_map(|f| match f {
                Fate::NotOpened(why) => Some(why.as_str()),
                Fate::Closed(..) | Fate::Open(_) => None,
            })
            .collect();
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for w in &not_opened {
            *reasons.entry(w).or_default() += 1;
        }
        let mut answered: BTreeMap<u16, usize> = BTreeMap::new();
        for f in fates {
            if let Fate::Closed(_, Some(s)) | Fate::Open(Some(s)) = f {
                *answered.entry(*s).or_default() += 1;
            }
        }
        let still_open = fates.iter().filter(|f| matches!(f, Fate::Open(_))).count();
        let when = if closed_at.is_empty() {
            "—".to_owned()
        } else {
            let median = crate::stats::percentile(&closed_at, 50.0).unwrap_or(0.0);
            format!(
                "{:.1} / {median:.1} / {:.1}",
                closed_at.first().copied().unwrap_or(0.0),
                closed_at.last().copied().unwrap_or(0.0)
            )
        };
        let l = &m.run.client.latency;
        let from = match c.sources {
            None => "no flood".to_owned(),
            Some(1) => "1 address".to_owned(),
            Some(n) => format!("{n} addresses"),
        };
        let opened = fates.len() - not_opened.len();
        let _ = writeln!(
            out,
            "| {} | {from} | {} | {} | {} | {when} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} | {} | {} |",
            b.name(Target::Enclave(c.enclave)),
            if c.sources.is_some() {
                opened.to_string()
            } else {
                "—".to_owned()
            },
            if c.sources.is_none() {
                "—".to_owned()
            } else if reasons.is_empty() {
                "0".to_owned()
            } else {
                format!(
                    "{} ({})",
                    not_opened.len(),
                    reasons
                        .iter()
                        .map(|(w, n)| format!("{w} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            if c.sources.is_some() {
                closed_at.len().to_string()
            } else {
                "—".to_owned()
            },
            if answered.is_empty() {
                "—".to_owned()
            } else {
                answered
                    .iter()
                    .map(|(s, n)| format!("{s} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if c.sources.is_some() {
                still_open.to_string()
            } else {
                "—".to_owned()
            },
            l.p50,
            l.p99,
            l.p999,
            l.max,
            m.run.client.errors(),
            m.proxy_cpu.map_or("—".to_owned(), |p| share(m.util(p))),
            opt(m.rss_peak_kib.map(mib), 1),
            other(b, m),
        );
        if c.sources.is_some() {
            checks.push(format!(
                "- {}, flood from {from}: normal client p99 {:.1} ms ≤ {FLOOD_P99_MAX_MS:.0} ms — {}{}",
                b.name(Target::Enclave(c.enclave)),
                l.p99,
                met(l.p99 <= FLOOD_P99_MAX_MS && m.run.client.errors() == 0),
                match (m.run.client.errors(), &m.run.client.first_error) {
                    (0, _) => String::new(),
                    (n, Some(e)) => format!(" ({n} requests failed, first: {e})"),
                    (n, None) => format!(" ({n} requests failed)"),
                }
            ));
        }
    }
    let _ = writeln!(out, "\n{}\n", checks.join("\n"));
}

fn mib(kib: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "memory sizes")]
    let k = kib as f64;
    k / 1024.0
}

fn part_d(out: &mut String, b: &Bench, r: &Results) {
    let (ta, tb) = (Target::Enclave(0), Target::Enclave(1));
    let _ = writeln!(
        out,
        "### (d) A/B: {} against {}\n\nBoth binaries ran side by side; each cell was measured for both in turn (the \
         order alternating from cell to cell) at the same rates.\n\n| figure | {} | {} | B / A |\n| --- | ---: | ---: | ---: |",
        b.name(tb),
        b.name(ta),
        b.name(ta),
        b.name(tb)
    );
    let mut row = |what: String, x: Option<f64>, y: Option<f64>, digits: usize| {
        let ratio = x.zip(y).map(|(x, y)| y / x.max(1e-12));
        let cell = |v: Option<f64>| match v {
            Some(v) if digits == 0 => num(v),
            v => opt(v, digits),
        };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} |",
            cell(x),
            cell(y),
            opt(ratio, 2)
        );
    };
    for &kind in &b.args.kinds {
        for conc in [1, b.args.concurrency] {
            let find = |t: Target| {
                r.closed
                    .iter()
                    .find(|c| c.target == t && c.kind == kind && c.concurrency == conc)
            };
            let cpu = |t| find(t).and_then(|c| c.m.proxy_cpu.and_then(|p| c.m.ms_per_req(p)));
            let rate = |t| find(t).map(|c| c.m.run.rate());
            if find(ta).is_some() {
                row(
                    format!("{} c{conc} CPU ms/req", kind.name()),
                    cpu(ta),
                    cpu(tb),
                    3,
                );
                row(
                    format!("{} c{conc} req/s", kind.name()),
                    rate(ta),
                    rate(tb),
                    0,
                );
            }
        }
        let find = |t: Target| r.open.iter().find(|c| c.target == t && c.kind == kind);
        if find(ta).is_some() {
            let lat =
                |t, p: fn(&crate::stats::Summary) -> f64| find(t).map(|c| p(&c.m.run.latency));
            row(
                format!("{} open-loop p99 ms", kind.name()),
                lat(ta, |l| l.p99),
                lat(tb, |l| l.p99),
                3,
            );
            row(
                format!("{} open-loop p99.9 ms", kind.name()),
                lat(ta, |l| l.p999),
                lat(tb, |l| l.p999),
                3,
            );
            let cpu = |t| find(t).and_then(|c| c.m.proxy_cpu.and_then(|p| c.m.ms_per_req(p)));
            row(
                format!("{} open-loop CPU ms/req", kind.name()),
                cpu(ta),
                cpu(tb),
                3,
            );
        }
    }
    let sources: Vec<Option<u32>> = {
        let mut v: Vec<Option<u32>> = r.flood.iter().map(|c| c.sources).collect();
        v.dedup();
        v
    };
    for s in sources {
        let p99 = |i: usize| {
            r.flood
                .iter()
                .find(|c| c.enclave == i && c.sources == s)
                .map(|c| c.m.run.client.latency.p99)
        };
        let what = match s {
            None => "normal client p99 ms, no flood".to_owned(),
            Some(n) => format!("normal client p99 ms, flood from {n} address(es)"),
        };
        row(what, p99(0), p99(1), 3);
    }
    let mem = |i: usize, f: fn(&crate::Memory) -> u64| r.memory.get(i).map(|m| mib(f(m)));
    row(
        "idle VmRSS MiB".into(),
        mem(0, |m| m.idle),
        mem(1, |m| m.idle),
        1,
    );
    row(
        "peak VmRSS under load MiB".into(),
        mem(0, |m| m.peak),
        mem(1, |m| m.peak),
        1,
    );
    row("VmHWM MiB".into(), mem(0, |m| m.hwm), mem(1, |m| m.hwm), 1);
    out.push('\n');
}

fn memory(out: &mut String, b: &Bench, r: &Results) {
    let _ = writeln!(
        out,
        "### Enclave's resident memory\n\n`/proc/<pid>/status`: idle after start-up and the pre-flight; the peak \
         VmRSS sampled every 0.2 s during its cells; VmHWM at the end; idle again after the load.\n\n\
         | Enclave | idle VmRSS MiB | peak VmRSS under load MiB | VmHWM MiB | VmRSS after MiB |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for (i, m) in r.memory.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            b.name(Target::Enclave(i)),
            mib(m.idle),
            mib(m.peak),
            mib(m.hwm),
            mib(m.after)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(1234567.4), "1,234,567");
        assert_eq!(num(999.0), "999");
        assert_eq!(num(1000.0), "1,000");
        assert_eq!(num(-4500.0), "-4,500");
    }
}
