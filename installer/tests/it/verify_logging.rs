//! `logging.dropped = "limited"` and `ssh.rate_limit`, proved in the lab: the
//! bastion example passes `verify` under both backends (its LOG rules count a
//! dropped probe per chain, the seventh new SSH connection is dropped by the limit
//! rule while a held one still carries data), a looser limit loaded in its place
//! fails, and a dropped packet really reaches the kernel log with its prefix.
//!
//! The kernel log test is the only one that writes the machine's own
//! `net.netfilter.nf_log_all_netns` (without it the kernel logs nothing from a
//! namespace other than the first): it sets it to 1 for the probe and puts the
//! old value back, also when it fails.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::OpenOptionsExt as _;
use std::process::Command;
use std::sync::Mutex;

use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use portcullis::verify::exec::{self, LabSession};
use portcullis::verify::{self, Expect, HostId, ProbeKind, ProbeSpec};
use portcullis_harness::{Backend, Family, Selector};

use crate::policy_test::installer_dir;
use crate::support::text;
use portcullis_harness::trial::privileged;

fn portcullis() -> Command {
    let mut c = Command::new(snapbox::cmd::cargo_bin!("portcullis"));
    c.env_remove("SSH_CONNECTION").current_dir(installer_dir());
    c
}

const BASTION: &str = "../examples/bastion.toml";

fn bastion_proves_every_promise() -> Result<(), Failed> {
    let out = portcullis()
        .args(["verify", "--config", BASTION])
        .output()?;
    let stdout = text(&out.stdout);
    if out.status.code() != Some(0) {
        return Err(format!(
            "exit {:?}\n{stdout}\n{}",
            out.status.code(),
            text(&out.stderr)
        )
        .into());
    }
    for want in [
        "ssh-limit#7",
        "INPUT: ssh rate limit (+",
        "INPUT: log what the policy drops next",
        "OUTPUT: log what the policy drops next",
        "FORWARD: log what the policy drops next",
        " 0 mismatched",
    ] {
        if !stdout.contains(want) {
            return Err(format!("stdout lacks {want:?}:\n{stdout}").into());
        }
    }
    Ok(())
}

/// The bastion's promises against the rendering of a looser limit (7 a minute):
/// the seventh connection gets through, and verify says so.
fn a_looser_limit_fails() -> Result<(), Failed> {
    let text7 = std::fs::read_to_string(installer_dir().join(BASTION))?
        .replace("rate_limit = \"6/60s\"", "rate_limit = \"7/60s\"");
    let rendered = portcullis::render(&Policy::parse(&text7, "bastion-7")?);
    let dir = tempfile::tempdir()?;
    let (v4, v6) = (dir.path().join("rules.v4"), dir.path().join("rules.v6"));
    std::fs::write(&v4, rendered.text(Family::V4).unwrap_or_default())?;
    std::fs::write(&v6, rendered.text(Family::V6).unwrap_or_default())?;
    let out = portcullis()
        .args([
            "verify",
            "--backend",
            "nft",
            "--config",
            BASTION,
            "--rules-v4",
        ])
        .arg(&v4)
        .arg("--rules-v6")
        .arg(&v6)
        .output()?;
    let stdout = text(&out.stdout);
    let mismatches: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("MISMATCH"))
        .collect();
    if out.status.code() != Some(1)
        || mismatches.len() != 2
        || !mismatches.iter().all(|l| l.contains("ssh-limit#7"))
    {
        return Err(format!("expected exit 1 and the two ssh-limit rows only:\n{stdout}").into());
    }
    Ok(())
}

/// One process-wide lock: the trials that flip the sysctl run one at a time.
static KERNEL_LOG: Mutex<()> = Mutex::new(());
const ALL_NETNS: &str = "/proc/sys/net/netfilter/nf_log_all_netns";

/// `nf_log_all_netns` set to 1 while it lives, put back on drop.
struct AllNetns(String);

impl AllNetns {
    fn enable() -> Result<AllNetns, Failed> {
        let old = std::fs::read_to_string(ALL_NETNS)
            .map_err(|e| format!("{ALL_NETNS}: {e}"))?
            .trim()
            .to_owned();
        std::fs::write(ALL_NETNS, "1").map_err(|e| format!("{ALL_NETNS}: {e}"))?;
        Ok(AllNetns(old))
    }
}

impl Drop for AllNetns {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(ALL_NETNS, &self.0) {
            eprintln!("could not restore {ALL_NETNS} to {}: {e}", self.0);
        }
    }
}

/// The kernel log from now on: `/dev/kmsg` at its end, read without blocking.
struct Kmsg(std::fs::File);

impl Kmsg {
    fn open() -> Result<Kmsg, Failed> {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        f.seek(SeekFrom::End(0))?;
        Ok(Kmsg(f))
    }

    /// Every record written since `open` (or the last call).
    fn drain(&mut self) -> Result<Vec<String>, Failed> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.push(text(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(out),
                // EPIPE: records were overwritten before we read them; go on.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A probe the bastion drops at the end of INPUT: its record must be in the
/// kernel log with the `portcullis-drop-in: ` prefix, the admin's address and
/// the port. The kernel writes the record in the packet's path, before the
/// probe's window ends, so the log is read once, after the probe.
fn dropped_packet_reaches_the_kernel_log(backend: Backend) -> Result<(), Failed> {
    let _one = KERNEL_LOG.lock().unwrap_or_else(|p| p.into_inner());
    let opts = verify::Options {
        policy: Policy::load(&installer_dir().join(BASTION))?,
        backends: vec![backend],
        rules_v4: None,
        rules_v6: None,
    };
    let topo = exec::topology();
    let (rules, _, _) = verify::plan(&opts, &topo);
    let mut lab = LabSession::start(backend).map_err(|e| e.0)?;
    lab.load(&rules).map_err(|e| e.0)?;
    let _all = AllNetns::enable()?;
    for family in Family::ALL {
        let port = exec::CLOSED_INBOUND_PORT;
        let admin = topo.addr(HostId::Admin, family).ok_or("no admin address")?;
        let mut kmsg = Kmsg::open()?;
        let spec = ProbeSpec {
            kind: ProbeKind::Tcp,
            from: HostId::Admin,
            to: HostId::Target,
            family,
            port: Some(port),
            count: None,
        };
        let obs = lab.probe(&spec, Expect::NoAnswer).map_err(|e| e.0)?;
        let logged = obs.counters.packets(&Selector::Comment {
            chain: Some("INPUT".into()),
            prefix: "log what the policy drops".into(),
        });
        let records = kmsg.drain()?;
        // The kernel spells IPv6 addresses in full: 2001:0db8:0002:0000:...
        let src = match admin {
            std::net::IpAddr::V4(a) => format!("SRC={a} "),
            std::net::IpAddr::V6(a) => {
                let groups: Vec<String> = a.segments().iter().map(|g| format!("{g:04x}")).collect();
                format!("SRC={} ", groups.join(":"))
            }
        };
        let found = records.iter().any(|r| {
            r.contains("portcullis-drop-in: ")
                && r.contains(&src)
                && r.contains(&format!("DPT={port} "))
        });
        if !found || logged == 0 || !Expect::NoAnswer.matches(&obs.outcome) {
            return Err(format!(
                "{backend} {family}: outcome {:?}, LOG rule counted {logged}, no record with \
                 portcullis-drop-in: {src}DPT={port} among {} records:\n{}",
                obs.outcome,
                records.len(),
                records.join("")
            )
            .into());
        }
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let missing = Backend::ALL.iter().find_map(|b| b.unavailable_reason());
    let mut v = vec![
        privileged(
            "verify_logging::bastion_proves_every_promise",
            missing.clone(),
            bastion_proves_every_promise,
        ),
        privileged(
            "verify_logging::a_looser_limit_fails",
            missing.clone(),
            a_looser_limit_fails,
        ),
    ];
    for backend in Backend::ALL {
        v.push(privileged(
            format!("verify_logging::dropped_packet_reaches_the_kernel_log::{backend}"),
            backend.unavailable_reason(),
            move || dropped_packet_reaches_the_kernel_log(backend),
        ));
    }
    v
}
