//! Timing samples, percentiles and the machine description.

use std::time::Duration;

/// Durations of repeated runs of one operation.
#[derive(Debug, Clone, Default)]
pub struct Timings(Vec<Duration>);

impl Timings {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn total(&self) -> Duration {
        self.0.iter().sum()
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn median(&self) -> Duration {
        self.percentile(50.0)
    }

    /// The samples in `range` of their recorded order.
    pub fn slice(&self, from: usize, to: usize) -> Timings {
        let to = to.min(self.0.len());
        Timings(self.0[from.min(to)..to].to_vec())
    }

    pub fn samples(&self) -> &[Duration] {
        &self.0
    }
}

/// CPU time the calling thread has run so far, from the scheduler's
/// statistics (`/proc/thread-self/schedstat`, nanoseconds): unlike wall
/// time it does not count time spent waiting for a CPU other processes use
/// (nor waiting for fsync).
pub fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.iter().enumerate() {
        let left = digits.len() - i;
        if i > 0 && left.rem_euclid(3) == 0 {
            out.push(',');
        }
        out.push(*c);
    }
    out
}

/// What the numbers were measured on.
#[derive(Debug, Clone)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown".to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: memory_kib / 1024.0 / 1024.0,
        }
    }
}

/// The 1-minute load average (other work sharing the CPUs skews timings).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Bytes of a SQLite database with its WAL file.
pub fn sqlite_bytes(path: &std::path::Path) -> u64 {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    size(path) + size(std::path::Path::new(&wal))
}
