//! The processes a run starts, and what `/proc` says about them and about the machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::log;

/// Clock ticks per second of `/proc` CPU times (`USER_HZ`), from `getconf CLK_TCK`.
pub(crate) fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (all its threads, living and exited), in clock ticks.
pub(crate) fn ticks(pid: u32) -> Option<u64> {
    stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// utime + stime from the text of a `stat` file (of a process or of one of its tasks).
fn stat_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// utime + stime of the threads of process `pid` named `name` (`/proc/<pid>/task/*/comm`), in
/// clock ticks; `None` when the process has no such thread.
pub(crate) fn thread_ticks(pid: u32, name: &str) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for task in dir.filter_map(Result::ok) {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // A thread that exited since the directory was listed counts as 0.
        let used = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|stat| stat_ticks(&stat))
            .unwrap_or(0);
        total = Some(total.unwrap_or(0) + used);
    }
    total
}

/// CPU ticks of several processes together (those gone count as 0).
pub(crate) fn ticks_of(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| ticks(p)).sum()
}

/// The processes whose parent is `pid` (nginx's workers).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let (_, rest) = s.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Busy CPU time of the whole machine (all cores), in clock ticks, from `/proc/stat`.
pub(crate) fn machine_busy_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    // user nice system idle iowait irq softirq steal ...
    line.split_whitespace()
        .skip(1)
        .take(8)
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4)
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// A `/proc/<pid>/status` value in KiB (`VmRSS`, `VmHWM`).
pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.split_whitespace().next()?.parse().ok()
    })
}

/// How a started process is asked to stop.
#[derive(Clone, Debug)]
pub(crate) enum Stop {
    /// `nginx -s stop` with these arguments (prefix, config): the master stops its workers.
    Nginx(Vec<String>),
    /// SIGTERM, as to any graceful server.
    Term,
}

/// A process this run started.
pub(crate) struct Started {
    pub(crate) name: String,
    pub(crate) child: Child,
    stop: Stop,
    program: PathBuf,
}

/// The processes this run started; `stop_all` (also on drop) ends each by its own id.
#[derive(Default)]
pub(crate) struct Procs {
    started: Vec<Started>,
}

impl Procs {
    /// Starts a process with stdout discarded and stderr to `log_file`; returns its pid.
    pub(crate) fn start(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log_file: &Path,
        stop: Stop,
    ) -> anyhow::Result<u32> {
        let err = std::fs::File::create(log_file)
            .with_context(|| format!("create {}", log_file.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {name} ({})", program.display()))?;
        let pid = child.id();
        self.started.push(Started {
            name: name.to_owned(),
            child,
            stop,
            program: program.to_owned(),
        });
        Ok(pid)
    }

    /// Whether the process with this pid has exited (with its status, if so).
    pub(crate) fn exited(&mut self, pid: u32) -> Option<String> {
        let s = self.started.iter_mut().find(|s| s.child.id() == pid)?;
        match s.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Every running process started here, with its children (nginx workers).
    pub(crate) fn all_pids(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for s in &self.started {
            let pid = s.child.id();
            if ticks(pid).is_some() {
                out.push(pid);
                out.extend(children(pid));
            }
        }
        out
    }

    /// Stops every process, newest first, each by its own id; kills what does not stop in 10 s.
    pub(crate) fn stop_all(&mut self) {
        for s in self.started.iter_mut().rev() {
            if !matches!(s.child.try_wait(), Ok(None)) {
                continue;
            }
            let asked = match &s.stop {
                Stop::Nginx(args) => Command::new(&s.program)
                    .args(args)
                    .args(["-s", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status(),
                Stop::Term => Command::new("kill")
                    .args(["-TERM", &s.child.id().to_string()])
                    .status(),
            };
            if !asked.is_ok_and(|st| st.success()) {
                let _ = s.child.kill();
            }
        }
        for s in self.started.iter_mut().rev() {
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(s.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(s.child.try_wait(), Ok(None)) {
                log(&format!("{} did not stop within 10 s; killing it", s.name));
                let _ = s.child.kill();
                let _ = s.child.wait();
            }
        }
        self.started.clear();
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// CPU accounting of the machine around a measurement: the busy time of all cores, the CPU time
/// of this process (the load generators) and of every process the run started.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    at: Instant,
    busy: u64,
    ours: u64,
}

impl Snapshot {
    /// Takes a snapshot; `ours` are the pids of processes the run started.
    pub(crate) fn take(ours: &[u32]) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            busy: machine_busy_ticks(),
            ours: ticks_of(ours) + ticks(std::process::id()).unwrap_or(0),
        }
    }

    /// Wall seconds from `self` to `later`.
    pub(crate) fn elapsed_to(&self, later: &Snapshot) -> f64 {
        later.at.saturating_duration_since(self.at).as_secs_f64()
    }

    /// CPU used since `self` by processes outside the benchmark, in % of one core, and the
    /// machine's busy share of all its cores (0–1).
    pub(crate) fn since(&self, now: &Snapshot, hz: f64) -> (f64, f64) {
        let wall = now
            .at
            .saturating_duration_since(self.at)
            .as_secs_f64()
            .max(1e-9);
        #[expect(
            clippy::cast_precision_loss,
            reason = "tick counts stay far below 2^52"
        )]
        let (busy, ours) = (
            now.busy.saturating_sub(self.busy) as f64 / hz,
            now.ours.saturating_sub(self.ours) as f64 / hz,
        );
        #[expect(clippy::cast_precision_loss, reason = "a core count")]
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        (
            ((busy - ours) / wall * 100.0).max(0.0),
            (busy / wall / cores).clamp(0.0, 1.0),
        )
    }
}

/// Waits (up to `limit`) until processes outside the benchmark use under 10 % of a core,
/// measured over one-second windows. Returns the last window's figure.
pub(crate) fn wait_for_quiet(limit: Duration, ours: &dyn Fn() -> Vec<u32>, hz: f64) -> f64 {
    let start = Instant::now();
    let mut next_note = start;
    loop {
        let a = Snapshot::take(&ours());
        std::thread::sleep(Duration::from_secs(1));
        let (other, _) = a.since(&Snapshot::take(&ours()), hz);
        if other < 10.0 {
            return other;
        }
        if start.elapsed() >= limit {
            log(&format!(
                "the machine is still busy ({other:.0} % of a core outside the benchmark); measuring anyway"
            ));
            return other;
        }
        if Instant::now() >= next_note {
            log(&format!(
                "the machine is busy ({other:.0} % of a core outside the benchmark); waiting up to {} s",
                limit.as_secs()
            ));
            next_note += Duration::from_secs(30);
        }
    }
}

/// Samples a process's `VmRSS` every 200 ms on a thread of its own, keeping the peak.
pub(crate) struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssSampler {
    /// Starts sampling `pid`.
    pub(crate) fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = status_kib(pid, "VmRSS") {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the peak `VmRSS` seen, KiB.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Runs a command to completion and returns its stdout; an error with its stderr otherwise.
pub(crate) fn output(program: &Path, args: &[String]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "`{} {}` exited with {}: {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(ticks(me).is_some());
        assert!(thread_ticks(me, "no such thread name").is_none());
        // A named thread of this process is found while it lives (the thread names itself
        // once it runs, so it says when it has started).
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let probe = std::thread::Builder::new()
            .name("lb-probe".to_owned())
            .spawn(move || {
                started_tx.send(()).ok();
                stop_rx.recv().ok()
            })
            .unwrap();
        started.recv().unwrap();
        assert!(thread_ticks(me, "lb-probe").is_some());
        drop(stop);
        probe.join().unwrap();
        assert!(status_kib(me, "VmRSS").unwrap() > 0);
        assert!(status_kib(me, "VmNope").is_none());
        assert!(machine_busy_ticks() > 0);
    }
}
