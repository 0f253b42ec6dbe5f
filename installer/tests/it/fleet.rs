//! The Ansible role (`ansible/roles/portcullis`, played by the sample
//! `ansible/site.yml`) against two hosts of the standard lab, each with real
//! OpenSSH: `target` and `web` (two network namespaces, two firewalls, two
//! sshds). `ansible-playbook` (ansible-core from the venv `ci/setup` installs)
//! runs as a child inside the `admin` host's namespace with an inventory of the
//! two hosts' documentation addresses and each sshd's private client config.
//! Every host path the role writes (binary, policy, state dir, the root the rules
//! are persisted into) is in this trial's private directories; nothing is run
//! with become.
//!
//! One trial, five playbook runs, each building on the last:
//! 1. a good policy with a `[[blocklist]] file` (shipped by
//!    `portcullis_blocklist_files`) rolls out over both batches and is confirmed
//!    (changed > 0, the ruleset and the blocklist's sets live and persisted, the
//!    record confirmed);
//! 2. the same policy again reports changed=0;
//! 3. check mode with another policy and a blocklist file new to the hosts
//!    reports the drift and changes nothing (the `*-save` text, the persisted
//!    files, the state records and the policy's directory are identical);
//! 4. a policy that excludes the admin's subnet fails on the first host (apply's
//!    preflight refuses it there, nothing is loaded) and the rollout stops
//!    (`max_fail_percentage: 0`): the second host is never touched;
//! 5. a host that cannot be reached again after apply (its confirm is sent to a
//!    port nothing listens on) is reported unreachable, the rollout stops, and the
//!    host's own guard restores the rules it had at the deadline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use portcullis::apply::{Record, Status};
use portcullis_harness::services::ssh::{Client, LabDir, Sshd};
use portcullis_harness::trial::privileged;
use portcullis_harness::{Backend, Family, HostId, Lab};

use crate::support::{
    BIN, Fixture, TRACKED_BEFORE, ensure, private_dir, ssh_policy as policy, without_chain_counters,
};

/// Where `ci/setup` installs ansible-core; `PORTCULLIS_ANSIBLE_VENV` overrides.
const VENV: &str = "/var/cache/portcullis/ansible-venv";

fn venv() -> PathBuf {
    std::env::var_os("PORTCULLIS_ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(VENV))
}

/// Why the trial cannot run here, if it cannot.
fn missing() -> Option<String> {
    let playbook = venv().join("bin/ansible-playbook");
    if !playbook.exists() {
        return Some(format!(
            "needs ansible-core at {} (ci/setup installs it)",
            playbook.display()
        ));
    }
    Backend::Nft.unavailable_reason()
}

pub fn trials() -> Vec<Trial> {
    vec![
        privileged("fleet::ansible_rollout", missing(), rollout),
        privileged(
            "fleet::json_outcomes",
            Backend::Nft.unavailable_reason(),
            json_outcomes,
        ),
    ]
}

/// The blocklist the rolled-out policies read (`drop.netset`, shipped by
/// `portcullis_blocklist_files`): documentation addresses no lab host uses.
const DROP: &str = "# fleet trial\n203.0.113.240/28\n2001:db8:bad::/48\n";
/// A second list, new to the hosts in check mode (`more.netset`).
const MORE: &str = "198.51.100.240/28\n2001:db8:bad:1::/64\n";

/// `policy` with `[[blocklist]]` entries reading each of `files` (relative).
fn listed(allow: &[String], files: &[&str]) -> String {
    let mut text = policy(allow);
    for f in files {
        text.push_str(&format!("\n[[blocklist]]\nfile = \"{f}\"\n"));
    }
    text
}

/// One managed host: its lab host, sshd and private paths.
struct Managed {
    name: &'static str,
    id: HostId,
    _sshd: Sshd,
    client: Client,
    state: PathBuf,
    root: PathBuf,
    policy: PathBuf,
    bin: PathBuf,
}

struct FleetLab {
    lab: Lab,
    hosts: Vec<Managed>,
    /// /run/portcullis-fleet-*: state dirs, roots, policies, the controller's HOME.
    dir: tempfile::TempDir,
    /// The copied binaries (the target dir: /run may be noexec).
    _bins: tempfile::TempDir,
}

impl FleetLab {
    fn new() -> Result<FleetLab, Failed> {
        let lab = Lab::standard()?;
        let dir = private_dir("fleet")?;
        let bins = tempfile::Builder::new()
            .prefix("fleet-bin-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let mut hosts = Vec::new();
        for (name, id) in [("t1", HostId::Target), ("t2", HostId::Web)] {
            let listen: Vec<_> = Family::ALL.iter().map(|&f| lab.addr(id, f)).collect();
            let lab_dir = Arc::new(LabDir::new()?);
            let sshd = lab
                .host(id)
                .try_run(move || async move { Sshd::start(lab_dir, &listen, 22).await })??;
            for f in Family::ALL {
                lab.host(id).load(Backend::Nft, f, TRACKED_BEFORE)?;
            }
            let home = dir.path().join(name);
            std::fs::create_dir(&home)?;
            let root = crate::persist::copy_fixture("debian", &home)?;
            // A policy with sets persists only into a root that can load them
            // at boot: Debian's needs the ipset binary (the role's confirm
            // adds portcullis's own netfilter-persistent plugin).
            crate::persist::sets::add_ipset(&root, "debian", true)?;
            let client = sshd.client();
            hosts.push(Managed {
                name,
                id,
                _sshd: sshd,
                client,
                state: home.join("state"),
                root,
                policy: home.join("etc/policy.toml"),
                bin: bins.path().join(name).join("portcullis"),
            });
            std::fs::create_dir(bins.path().join(name))?;
        }
        let ctl = dir.path().join("controller");
        std::fs::create_dir(&ctl)?;
        std::fs::write(ctl.join("drop.netset"), DROP)?;
        std::fs::write(ctl.join("more.netset"), MORE)?;
        Ok(FleetLab {
            lab,
            hosts,
            dir,
            _bins: bins,
        })
    }

    fn inventory(&self) -> Result<PathBuf, Failed> {
        let mut hosts = serde_json::Map::new();
        for h in &self.hosts {
            hosts.insert(
                h.name.into(),
                serde_json::json!({
                    "ansible_host": self.lab.addr(h.id, Family::V4).to_string(),
                    "ansible_ssh_common_args": format!("-F {}", h.client.config().display()),
                    "portcullis_bin": h.bin,
                    "portcullis_policy_dest": h.policy,
                    "portcullis_state_dir": h.state,
                    "portcullis_root": h.root,
                }),
            );
        }
        let inv = serde_json::json!({
            "all": { "children": { "firewalled": {
                "hosts": hosts,
                "vars": {
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "portcullis_binary_src": BIN,
                    "portcullis_backend": "nft",
                    "portcullis_timeout": 20,
                    "portcullis_blocklist_files":
                        [self.dir.path().join("controller/drop.netset")],
                },
            }}}
        });
        // JSON is YAML: the yaml inventory plugin reads it.
        let p = self.dir.path().join("controller/inventory.yml");
        std::fs::write(&p, serde_json::to_string_pretty(&inv)?)?;
        Ok(p)
    }

    /// `ansible-playbook site.yml` in the admin host with `policy` and `extra`.
    fn play(&self, policy: &str, extra: &[&str]) -> Result<Play, Failed> {
        let ctl = self.dir.path().join("controller");
        let policy_file = ctl.join("policy.toml");
        std::fs::write(&policy_file, policy)?;
        let inventory = self.inventory()?;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let venv = venv();
        let mut c: Command = self
            .lab
            .host(HostId::Admin)
            .command(venv.join("bin/ansible-playbook"));
        c.env_clear()
            .current_dir(&ctl)
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/usr/bin:/sbin:/bin",
                    venv.join("bin").display()
                ),
            )
            .env("HOME", &ctl)
            .env("LC_ALL", "C.UTF-8")
            .env("ANSIBLE_ROLES_PATH", repo.join("ansible/roles"))
            .env("ANSIBLE_LOCAL_TEMP", ctl.join("tmp"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", ctl.join("cp"))
            .env("ANSIBLE_HOST_KEY_CHECKING", "False")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "False")
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .arg("-i")
            .arg(&inventory)
            .arg(repo.join("ansible/site.yml"))
            .arg("-e")
            .arg(format!("portcullis_policy_src={}", policy_file.display()))
            .args(extra);
        let started = Instant::now();
        let out = c.output().map_err(|e| format!("cannot run {c:?}: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "fleet: ansible-playbook {extra:?} took {:.1} s, exit {:?}",
            started.elapsed().as_secs_f64(),
            out.status.code()
        );
        Ok(Play {
            ok: out.status.success(),
            recap: recap(&text),
            text,
        })
    }

    fn managed(&self, name: &str) -> &Managed {
        self.hosts.iter().find(|h| h.name == name).expect("a host")
    }

    /// `*-save` of both families, timestamp comments dropped, chain counters zeroed.
    fn save(&self, name: &str) -> Result<String, Failed> {
        let host = self.lab.host(self.managed(name).id);
        let mut out = String::new();
        for f in Family::ALL {
            let text = host.exec(&[&Backend::Nft.save_binary(f)], None)?;
            out.extend(
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(without_chain_counters),
            );
        }
        Ok(out)
    }

    /// Every file under the host's root and state dir with its contents.
    fn files(&self, name: &str) -> Result<BTreeMap<PathBuf, Vec<u8>>, Failed> {
        let h = self.managed(name);
        let mut out = BTreeMap::new();
        for top in [&h.root, &h.state] {
            crate::persist::walk(top, &mut out)?;
        }
        Ok(out)
    }

    /// Both hosts still have `rules` live and `files` (a [`FleetLab::files`]
    /// each) on disk; else `what` changed them.
    fn ensure_untouched(
        &self,
        rules: &[String; 2],
        files: &[BTreeMap<PathBuf, Vec<u8>>; 2],
        what: &str,
    ) -> Result<(), Failed> {
        for (i, h) in ["t1", "t2"].into_iter().enumerate() {
            ensure(self.save(h)? == rules[i], || {
                format!("{h}: {what} changed the live rules")
            })?;
            ensure(self.files(h)? == files[i], || {
                format!("{h}: {what} changed the persisted files or the state dir")
            })?;
        }
        Ok(())
    }

    /// `ipset list SET` in the host's namespace: its members, sorted.
    fn members(&self, name: &str, set: &str) -> Result<Vec<String>, Failed> {
        let text = self
            .lab
            .host(self.managed(name).id)
            .exec(&["ipset", "list", set], None)?;
        let mut out: Vec<String> = text
            .split_once("Members:\n")
            .map(|(_, m)| m.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// The names in the directory of the host's policy copy.
    fn policy_dir(&self, name: &str) -> Result<Vec<String>, Failed> {
        let dir = self.managed(name).policy.parent().expect("a directory");
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            out.push(e?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    fn last(&self, name: &str) -> Option<Record> {
        let text = std::fs::read_to_string(self.managed(name).state.join("last.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `portcullis status --config P --check` in the host: in sync?
    fn in_sync(&self, name: &str, policy: &str) -> Result<bool, Failed> {
        let h = self.managed(name);
        // Beside the controller's drop.netset, which it reads.
        let p = self
            .dir
            .path()
            .join(format!("controller/{name}-check.toml"));
        std::fs::write(&p, policy)?;
        let out = self
            .lab
            .host(h.id)
            .command(BIN)
            .arg("status")
            .arg("--config")
            .arg(&p)
            .arg("--check")
            .arg("--backend")
            .arg("nft")
            .arg("--state-dir")
            .arg(&h.state)
            .arg("--root")
            .arg(&h.root)
            .output()?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(format!(
                "status --check: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into()),
        }
    }
}

struct Play {
    ok: bool,
    recap: BTreeMap<String, BTreeMap<String, u32>>,
    text: String,
}

impl Play {
    fn stat(&self, host: &str, key: &str) -> Option<u32> {
        self.recap.get(host).and_then(|s| s.get(key)).copied()
    }

    /// The play failed with t1 counted once as `key` (`failed`, `unreachable`),
    /// and the rollout stopped there: t2 is not in the recap. `what` befell t1.
    fn stopped_at_t1(&self, key: &str, what: &str) -> Result<(), Failed> {
        ensure(!self.ok && self.stat("t1", key) == Some(1), || {
            format!("t1 was not {key} ({what}):\n{}", self.text)
        })?;
        ensure(!self.recap.contains_key("t2"), || {
            format!("the rollout went on to t2 after {what}:\n{}", self.text)
        })
    }
}

/// `PLAY RECAP` lines: `t1 : ok=9 changed=2 unreachable=0 failed=0 ...`.
fn recap(text: &str) -> BTreeMap<String, BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    let Some(at) = text.rfind("PLAY RECAP") else {
        return out;
    };
    for line in text[at..].lines().skip(1) {
        let Some((host, stats)) = line.split_once(" : ") else {
            continue;
        };
        let stats = stats
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
            .collect();
        out.insert(host.trim().to_owned(), stats);
    }
    out
}

/// The role end to end over real sshd: rollout (a blocklist file shipped, its
/// sets live and persisted), a second run (changed=0), `--check --diff` (with a
/// blocklist file new to the hosts), a policy that stops the rollout at host 1, and a host whose
/// confirm cannot reach it. Why it takes 40-110 s, the one trial over 10 s:
/// five `ansible-playbook` runs (each 4-16 s: ansible's own start-up, fact
/// gathering, async polling), and the last one waits out a real 6 s apply
/// deadline so the unconfirmed host rolls itself back.
fn rollout() -> Result<(), Failed> {
    let fl = FleetLab::new()?;
    let admin = |f| fl.lab.subnet(HostId::Admin, f).to_string();
    let good = listed(&[admin(Family::V4), admin(Family::V6)], &["drop.netset"]);
    let before = [fl.save("t1")?, fl.save("t2")?];

    // 1. Roll out: both batches, both confirmed.
    let run = fl.play(&good, &[])?;
    ensure(run.ok, || format!("the rollout failed:\n{}", run.text))?;
    for (i, h) in ["t1", "t2"].into_iter().enumerate() {
        ensure(
            run.stat(h, "changed").unwrap_or(0) > 0 && run.stat(h, "failed") == Some(0),
            || format!("{h}: {:?}\n{}", run.recap.get(h), run.text),
        )?;
        let last = fl.last(h);
        ensure(
            last.as_ref().map(|r| r.status) == Some(Status::Confirmed)
                && last.as_ref().and_then(|r| r.persisted.clone()).is_some(),
            || format!("{h}: the apply is not confirmed and persisted: {last:?}"),
        )?;
        let live = fl.save(h)?;
        ensure(
            live != before[i] && live.contains(":INPUT DROP") && live.contains("--dport 22"),
            || format!("{h}: the policy is not live:\n{live}"),
        )?;
        ensure(fl.in_sync(h, &good)?, || {
            format!("{h}: status --check finds drift after the rollout")
        })?;
        // The blocklist file was shipped: its sets are live, matched by the
        // blocklist rule, and persisted into the root for the boot.
        for (set, member) in [
            ("pc-bl0-4", "203.0.113.240/28"),
            ("pc-bl0-6", "2001:db8:bad::/48"),
        ] {
            let members = fl.members(h, set)?;
            ensure(members == [member], || {
                format!("{h}: {set} holds {members:?}")
            })?;
            ensure(live.contains(&format!("--match-set {set} src")), || {
                format!("{h}: no rule matches {set}:\n{live}")
            })?;
        }
        ensure(live.contains("blocklist[0] (from drop.netset)"), || {
            format!("{h}: no blocklist rule:\n{live}")
        })?;
        let root = &fl.managed(h).root;
        let sets = std::fs::read_to_string(root.join("etc/iptables/ipsets")).unwrap_or_default();
        ensure(
            sets.contains("add pc-bl0-4 203.0.113.240/28")
                && sets.contains("add pc-bl0-6 2001:db8:bad::/48"),
            || format!("{h}: the sets were not persisted into the root: {sets:?}"),
        )?;
    }
    let rolled_out = [fl.save("t1")?, fl.save("t2")?];

    // 2. The same policy again: nothing to do.
    let run = fl.play(&good, &[])?;
    ensure(run.ok, || format!("the second run failed:\n{}", run.text))?;
    for h in ["t1", "t2"] {
        ensure(run.stat(h, "changed") == Some(0), || {
            format!("{h}: second run: {:?}\n{}", run.recap.get(h), run.text)
        })?;
    }

    // 3. Check mode with another policy and a blocklist file new to the hosts
    // (judged from a scratch copy): the drift is reported, nothing changes.
    let wider = listed(
        &[
            admin(Family::V4),
            admin(Family::V6),
            fl.lab.subnet(HostId::Outsider, Family::V4).to_string(),
        ],
        &["drop.netset", "more.netset"],
    );
    let ctl = fl.dir.path().join("controller");
    let both = serde_json::json!({
        "portcullis_blocklist_files": [ctl.join("drop.netset"), ctl.join("more.netset")],
    })
    .to_string();
    let files = [fl.files("t1")?, fl.files("t2")?];
    let shipped = [fl.policy_dir("t1")?, fl.policy_dir("t2")?];
    let run = fl.play(&wider, &["--check", "--diff", "-e", &both])?;
    ensure(run.ok, || format!("check mode failed:\n{}", run.text))?;
    for h in ["t1", "t2"] {
        ensure(run.stat(h, "changed").unwrap_or(0) > 0, || {
            format!("{h}: check mode reports no change to come:\n{}", run.text)
        })?;
    }
    fl.ensure_untouched(&rolled_out, &files, "check mode")?;
    for (i, h) in ["t1", "t2"].into_iter().enumerate() {
        let now = fl.policy_dir(h)?;
        ensure(now == shipped[i], || {
            format!(
                "{h}: check mode left {now:?} beside the policy, not {:?}",
                shipped[i]
            )
        })?;
    }
    ensure(run.text.contains("--match-set pc-bl1-4 src"), || {
        format!(
            "check mode's diff does not name the new blocklist's set:\n{}",
            run.text
        )
    })?;
    let outsider = fl.lab.subnet(HostId::Outsider, Family::V4).to_string();
    ensure(
        run.text.contains(&format!("+ -A INPUT -s {outsider}")),
        || {
            format!(
                "check mode's diff does not name the new ssh source:\n{}",
                run.text
            )
        },
    )?;

    // 4. A policy that excludes the admin's subnet: refused on the first host,
    // and the second batch never starts.
    let cut = listed(
        &[fl.lab.subnet(HostId::Outsider, Family::V4).to_string()],
        &["drop.netset"],
    );
    let run = fl.play(&cut, &[])?;
    run.stopped_at_t1("failed", "the lockout policy")?;
    ensure(run.text.contains("does not include"), || {
        format!("t1 failed, but not on preflight's refusal:\n{}", run.text)
    })?;
    fl.ensure_untouched(&rolled_out, &files, "the lockout policy")?;

    // 5. A host that cannot be reached again after apply: its confirm goes to a
    // port nothing listens on. Unreachable, the rollout stops, and t1's guard
    // restores the rules it had at the deadline.
    let confirmed = fl.last("t1").map(|r| r.id);
    let run = fl.play(
        &wider,
        &[
            "-e",
            &both,
            "-e",
            "portcullis_timeout=6",
            "-e",
            "portcullis_confirm_ssh_args='-o ControlMaster=no -o ControlPath=none -o Port=2'",
        ],
    )?;
    run.stopped_at_t1("unreachable", "t1's confirm to a dead port")?;
    let until = Instant::now() + Duration::from_secs(30);
    let rec = loop {
        match fl.last("t1") {
            Some(r) if Some(&r.id) != confirmed.as_ref() && r.status.is_final() => break r,
            _ if Instant::now() > until => {
                return Err("t1's guard did not end the apply within 30 s".into());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    ensure(rec.status == Status::RolledBack, || format!("t1: {rec:?}"))?;
    ensure(fl.save("t1")? == rolled_out[0], || {
        "t1: the guard's rollback did not restore the rules it had".into()
    })?;
    ensure(fl.save("t2")? == rolled_out[1], || {
        "t2 changed although the rollout stopped".into()
    })?;
    Ok(())
}

/// The one JSON object a verb printed on stdout.
fn outcome(stdout: &str) -> Result<serde_json::Value, Failed> {
    serde_json::from_str(stdout.trim())
        .map_err(|e| format!("not one JSON object ({e}): {stdout:?}").into())
}

/// `apply`, `confirm` and `rollback --json` in a namespace of their own: what
/// the role parses (result, changed, the record, errors), through a refusal, a
/// same-session confirm, a rollback, and a confirm from a new session.
fn json_outcomes() -> Result<(), Failed> {
    let fx = Fixture::new("fleet-json", Backend::Nft)?;
    fx.load_before(|_| TRACKED_BEFORE.to_owned())?;
    let before = fx.save_both()?;
    let ok = fx.write("ok.toml", &policy(&["192.0.2.0/24"]))?;
    let cut = fx.write("cut.toml", &policy(&["203.0.113.0/28"]))?;
    let s1 = "192.0.2.10 40022 192.0.2.1 22";
    let s2 = "192.0.2.10 40023 192.0.2.1 22";
    let apply = |cfg: &Path| {
        fx.portcullis(
            "apply",
            &[
                "--json",
                "--no-wait",
                "--config",
                cfg.to_str().unwrap(),
                "--backend",
                "nft",
                "--timeout",
                "30",
                "--no-persist",
            ],
            Some(s1),
        )
    };
    let field = |v: &serde_json::Value, k: &str| v[k].clone();
    // The outcome is `result` and `changed` says `changed`.
    let says = |v: &serde_json::Value, result: &str, changed: bool| {
        v["result"] == result && v["changed"] == changed
    };
    // A verb run with `--json`: its status, its one JSON object, its stderr.
    let json = |c: Command| -> Result<(ExitStatus, serde_json::Value, String), Failed> {
        let (st, out, err) = fx.run(c)?;
        Ok((st, outcome(&out)?, err))
    };
    let verb = |name: &str, ssh: Option<&str>| json(fx.portcullis(name, &["--json"], ssh));

    // A policy that would cut the session: refused, nothing changed.
    let (st, v, err) = json(apply(&cut))?;
    ensure(
        st.code() == Some(2)
            && field(&v, "schema_version") == 1
            && field(&v, "verb") == "apply"
            && says(&v, "refused", false)
            && v["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("does not include")),
        || format!("refused apply: {st}: {v}\n{err}"),
    )?;
    fx.ensure_rules(&before, "a refused apply changed the rules")?;

    // --no-wait: live and pending, exit 0 at once.
    let (st, v, err) = json(apply(&ok))?;
    ensure(
        st.success()
            && says(&v, "pending", true)
            && v["record"]["status"] == "pending"
            && v["record"]["ssh_connection"] == s1,
        || format!("apply --no-wait: {st}: {v}\n{err}"),
    )?;
    ensure(fx.save_both()? != before, || {
        "apply --no-wait loaded nothing".into()
    })?;

    // Confirm from the session that ran apply: refused, still pending.
    let (st, v, _) = verb("confirm", Some(s1))?;
    ensure(
        st.code() == Some(2)
            && field(&v, "verb") == "confirm"
            && field(&v, "result") == "refused"
            && v["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("new connections")),
        || format!("same-session confirm: {st}: {v}"),
    )?;

    // Rollback: the rules of before are back.
    let (st, v, _) = verb("rollback", None)?;
    ensure(
        st.success()
            && field(&v, "verb") == "rollback"
            && says(&v, "rolled_back", true)
            && v["record"]["status"] == "rolled_back",
        || format!("rollback: {st}: {v}"),
    )?;
    fx.ensure_rules(&before, "rollback --json did not restore")?;

    // Nothing pending: confirm fails, and says so in JSON.
    let (st, v, _) = verb("confirm", Some(s2))?;
    ensure(st.code() == Some(1) && says(&v, "failed", false), || {
        format!("confirm with nothing pending: {st}: {v}")
    })?;

    // Apply again, confirm from a new session: confirmed.
    let (st, v, _) = json(apply(&ok))?;
    ensure(st.success(), || format!("second apply: {st}: {v}"))?;
    let applied = fx.save_both()?;
    let (st, v, _) = verb("confirm", Some(s2))?;
    ensure(
        st.success() && says(&v, "confirmed", true) && v["record"]["status"] == "confirmed",
        || format!("new-session confirm: {st}: {v}"),
    )?;
    fx.ensure_rules(&applied, "confirm changed the rules")?;
    Ok(())
}
