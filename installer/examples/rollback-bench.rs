//! Benchmark: how long after the deadline the rollback guard has restored the
//! snapshot. Runs `portcullis apply --timeout 1` RUNS times (default 20) under each
//! backend present, never confirms, and reads the guard's record (`ended` minus
//! `deadline`, wall clock). Prints median, 95th percentile and maximum. Target:
//! within one second.
//!
//! Run as root after building the binary:
//! `cargo build --release -p portcullis && cargo run --release -p portcullis --example rollback-bench [-- RUNS]`.
//! Every apply runs inside a fresh lab host (`portcullis_harness::Host`: an
//! anonymous network namespace that dies with this process); the state directory
//! is private, under /run, and removed at the end.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use portcullis::apply::Record;
use portcullis_harness::{Backend, Host};

const POLICY: &str = "[ssh]\nallow_from = [\"198.51.100.0/24\", \"2001:db8:2::/64\"]\n";

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    if let Some(why) = portcullis_harness::trial::root_missing() {
        eprintln!("rollback-bench: {why}");
        std::process::exit(2);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/rollback-bench -> target/<profile>/portcullis
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("portcullis"))
        .filter(|p| p.exists())
        .unwrap_or_else(|| {
            eprintln!(
                "rollback-bench: build the binary first: cargo build --release -p portcullis"
            );
            std::process::exit(2);
        });
    // Under /run: the state dir's ancestors must be root's, and a target dir
    // built by a user is not.
    let work = PathBuf::from(format!(
        "/run/portcullis-rollback-bench-{}",
        std::process::id()
    ));
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&work)
            .expect("make the work dir");
    }
    std::fs::write(work.join("policy.toml"), POLICY).expect("write the policy");
    for backend in Backend::ALL {
        if let Some(why) = backend.unavailable_reason() {
            println!("{backend}: skipped ({why})");
            continue;
        }
        let mut late = Vec::new();
        for i in 0..runs {
            match one(&bin, &work, backend, i) {
                Ok(ms) => late.push(ms),
                Err(e) => {
                    eprintln!("rollback-bench: {backend} run {i}: {e}");
                    break;
                }
            }
        }
        late.sort_unstable();
        if late.is_empty() {
            continue;
        }
        let pick = |q: f64| late[((late.len() - 1) as f64 * q).round() as usize];
        println!(
            "{backend}: rollback after the deadline over {} runs: median {} ms, p95 {} ms, max {} ms (target 1000 ms)",
            late.len(),
            pick(0.5),
            pick(0.95),
            late[late.len() - 1]
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// One unconfirmed apply in a fresh namespace; milliseconds from the deadline to
/// the end of the rollback.
fn one(bin: &Path, work: &Path, backend: Backend, i: usize) -> Result<i64, String> {
    let host = Host::new(&format!("rollback-{backend}-{i}")).map_err(|e| e.to_string())?;
    let state: PathBuf = work.join(format!("state-{backend}-{i}"));
    let out = host
        .command(bin)
        .args([
            "apply",
            "--timeout",
            "1",
            "--no-persist",
            "--backend",
            backend.name(),
        ])
        .arg("--config")
        .arg(work.join("policy.toml"))
        .arg("--state-dir")
        .arg(&state)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    drop(host);
    if out.status.code() != Some(1) {
        return Err(format!(
            "apply exited {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // `apply` exits once the record is final, which may be a moment before the
    // guard moves it from pending.json to last.json.
    let text = std::fs::read_to_string(state.join("last.json"))
        .or_else(|_| std::fs::read_to_string(state.join("pending.json")))
        .map_err(|e| e.to_string())?;
    let r: Record = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(r.ended_unix_ms.unwrap_or(0) as i64 - r.deadline_unix_ms as i64)
}
