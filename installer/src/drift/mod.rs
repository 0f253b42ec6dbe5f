//! Drift: does the live ruleset (and the persisted one) still match the policy?
//!
//! Pure: [`compare`] takes the text `*-save` prints for the live filter table and
//! the same for the policy's rendering (put through the same backend in a
//! throwaway network namespace by [`gather`], so both sides are spelled by the
//! same `*-save`: `-m tcp`, `/32` suffixes, comment quoting), normalises both
//! (counters dropped, chain headers in name order, whitespace collapsed) and
//! says what differs, rule by rule, in chain order. It reads no file and runs
//! nothing; [`gather`] does the I/O.
//!
//! Only the filter table is compared, because it is the only table portcullis
//! loads; rules in other tables (Docker's nat chains) are named in `notes`.

pub mod gather;

use std::collections::BTreeMap;

use serde::Serialize;

/// One family's filter table as `*-save` prints it, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Chain name to its policy (`ACCEPT`, `DROP`, `-` for a user chain).
    pub chains: BTreeMap<String, String>,
    /// The `-A` lines in order, counters stripped, whitespace collapsed.
    pub rules: Vec<String>,
}

impl Table {
    fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a String> + 'a {
        self.rules
            .iter()
            .filter(move |r| rule_chain(r) == Some(chain))
    }

    /// No rule and every chain accepting: what a table nobody loaded looks like.
    fn is_empty_accept(&self) -> bool {
        self.rules.is_empty() && self.chains.values().all(|p| p == "ACCEPT")
    }
}

fn rule_chain(rule: &str) -> Option<&str> {
    rule.strip_prefix("-A ")?.split_whitespace().next()
}

/// `[12:345] -A INPUT ...` (from `*-save -c`) to `-A INPUT ...`, whitespace collapsed.
fn normalise_rule(line: &str) -> String {
    let line = line.trim();
    let line = match (line.starts_with('['), line.find("] ")) {
        (true, Some(i)) => &line[i + 2..],
        _ => line,
    };
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every table in `save` text: name to its normalised table.
pub fn parse(save: &str) -> BTreeMap<String, Table> {
    let mut tables = BTreeMap::new();
    let mut current: Option<(String, Table)> = None;
    for line in save.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('*') {
            if let Some((n, t)) = current.take() {
                tables.insert(n, t);
            }
            current = Some((name.trim().to_owned(), Table::default()));
        } else if line == "COMMIT" {
            if let Some((n, t)) = current.take() {
                tables.insert(n, t);
            }
        } else if let Some((_, t)) = current.as_mut() {
            if let Some(header) = line.strip_prefix(':') {
                // `:INPUT DROP [0:0]`: the counters are traffic, not rules.
                let mut words = header.split_whitespace();
                if let Some(name) = words.next() {
                    let policy = words.next().unwrap_or("-").to_owned();
                    t.chains.insert(name.to_owned(), policy);
                }
            } else {
                t.rules.push(normalise_rule(line));
            }
        }
    }
    if let Some((n, t)) = current {
        tables.insert(n, t);
    }
    tables
}

/// How one family compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    InSync,
    Differs,
    /// The policy has rules for this family and none are loaded.
    Missing,
    /// The policy leaves this family alone (`ipv6.mode = "untouched"`).
    NotManaged,
}

/// One family's comparison.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyDrift {
    pub family: String,
    pub state: State,
    /// One line each, as a diff from the live rules to the policy's (what an
    /// apply would do): `- RULE` live only (added by hand, by Docker), `+ RULE`
    /// in the policy but not live, and chain-level differences in words.
    pub differences: Vec<String>,
    /// Rules in tables portcullis does not load (not drift).
    pub notes: Vec<String>,
}

/// Compare the live `*-save` text of one family with the canonical save text
/// of the policy's rendering (`None`: the policy does not manage the family).
pub fn compare(family: &str, live: &str, wanted: Option<&str>) -> FamilyDrift {
    let live_tables = parse(live);
    let notes = live_tables
        .iter()
        .filter(|(name, t)| name.as_str() != "filter" && !t.rules.is_empty())
        .map(|(name, t)| {
            format!(
                "table {name} has {} rule(s); portcullis loads only the filter table",
                t.rules.len()
            )
        })
        .collect();
    let mut out = FamilyDrift {
        family: family.to_owned(),
        state: State::InSync,
        differences: Vec::new(),
        notes,
    };
    let Some(wanted) = wanted else {
        out.state = State::NotManaged;
        return out;
    };
    let want = parse(wanted).remove("filter").unwrap_or_default();
    let have = match live_tables.get("filter") {
        Some(t) if !t.is_empty_accept() || want.is_empty_accept() => t,
        _ => {
            out.state = State::Missing;
            out.differences.push(format!(
                "no {family} filter rules are loaded; the policy has {} rule(s)",
                want.rules.len()
            ));
            return out;
        }
    };
    for (chain, policy) in &want.chains {
        match have.chains.get(chain) {
            None => out
                .differences
                .push(format!("chain {chain} is missing from the live rules")),
            Some(p) if p != policy => out.differences.push(format!(
                "chain {chain} has policy {p} live, {policy} in the policy"
            )),
            Some(_) => {}
        }
    }
    for chain in have.chains.keys() {
        if !want.chains.contains_key(chain) {
            let whose = if chain.starts_with("DOCKER") {
                " (Docker's)"
            } else {
                ""
            };
            out.differences.push(format!(
                "chain {chain}{whose} is live but not in the policy"
            ));
        }
    }
    // Rules chain by chain, in the order the chains first appear in either side.
    let mut chains: Vec<&str> = Vec::new();
    for r in want.rules.iter().chain(have.rules.iter()) {
        if let Some(c) = rule_chain(r) {
            if !chains.contains(&c) {
                chains.push(c);
            }
        }
    }
    for chain in chains {
        let w: Vec<&String> = want.rules_of(chain).collect();
        let h: Vec<&String> = have.rules_of(chain).collect();
        out.differences.extend(diff_lines(&w, &h));
    }
    if !out.differences.is_empty() {
        out.state = State::Differs;
    }
    out
}

/// `+ LINE` for lines only in `want`, `- LINE` for lines only in `have`, in order
/// (a longest common subsequence; a moved rule shows as one of each).
fn diff_lines(want: &[&String], have: &[&String]) -> Vec<String> {
    let (n, m) = (want.len(), have.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if want[i] == have[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && want[i] == have[j] {
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("- {}", have[j]));
            j += 1;
        } else {
            out.push(format!("+ {}", want[i]));
            i += 1;
        }
    }
    out
}

/// What the persisted files say, from `install --check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PersistedState {
    InSync,
    Differs,
    /// No mechanism could be named for the root (nothing to compare with).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Persisted {
    pub state: PersistedState,
    pub root: String,
    pub mechanism: Option<String>,
    /// The files that would change, each with its unified diff.
    pub files: Vec<crate::persist::FileReport>,
    /// Why the state is `unknown`.
    pub reason: Option<String>,
}

/// The whole comparison: both families and the persisted files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub config: String,
    pub backend: String,
    /// Every family in sync (or not managed) and the persisted files in sync
    /// (or unknown).
    pub in_sync: bool,
    pub families: Vec<FamilyDrift>,
    pub persisted: Persisted,
}

impl Drift {
    pub fn new(
        config: String,
        backend: String,
        families: Vec<FamilyDrift>,
        persisted: Persisted,
    ) -> Drift {
        let in_sync = families
            .iter()
            .all(|f| matches!(f.state, State::InSync | State::NotManaged))
            && persisted.state != PersistedState::Differs;
        Drift {
            config,
            backend,
            in_sync,
            families,
            persisted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANT: &str = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n\
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A INPUT -s 198.51.100.0/28 -p tcp -m tcp --dport 22 -j ACCEPT\n\
-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n";

    #[test]
    fn counters_comments_and_header_order_are_not_drift() {
        let live = "# Generated by iptables-nft-save v1.8.9 on Fri Dec  4 14:00:00 2026\n*filter\n\
:OUTPUT DROP [7:420]\n:INPUT DROP [12:3456]\n:FORWARD DROP [0:0]\n\
[40:2000] -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
[1:60] -A INPUT  -s 198.51.100.0/28 -p tcp -m tcp --dport 22 -j ACCEPT\n\
[39:1900] -A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n# Completed\n";
        let d = compare("ipv4", live, Some(WANT));
        assert_eq!(d.state, State::InSync, "{d:?}");
        assert!(d.differences.is_empty());
    }

    #[test]
    fn a_rule_added_by_hand_is_a_minus_line() {
        let live = WANT.replace(
            "-A OUTPUT",
            "-A INPUT -s 203.0.113.9/32 -j ACCEPT\n-A OUTPUT",
        );
        let d = compare("ipv4", &live, Some(WANT));
        assert_eq!(d.state, State::Differs);
        assert_eq!(
            d.differences,
            vec!["- -A INPUT -s 203.0.113.9/32 -j ACCEPT"]
        );
    }

    #[test]
    fn a_removed_rule_and_a_changed_policy_are_named() {
        let live = WANT
            .replace(
                "-A INPUT -s 198.51.100.0/28 -p tcp -m tcp --dport 22 -j ACCEPT\n",
                "",
            )
            .replace(":FORWARD DROP", ":FORWARD ACCEPT");
        let d = compare("ipv4", &live, Some(WANT));
        assert_eq!(
            d.differences,
            vec![
                "chain FORWARD has policy ACCEPT live, DROP in the policy",
                "+ -A INPUT -s 198.51.100.0/28 -p tcp -m tcp --dport 22 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn a_reordered_rule_shows_as_removed_and_added() {
        let live = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n\
-A INPUT -s 198.51.100.0/28 -p tcp -m tcp --dport 22 -j ACCEPT\n\
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n";
        let d = compare("ipv4", live, Some(WANT));
        assert_eq!(d.state, State::Differs);
        assert_eq!(d.differences.len(), 2, "{d:?}");
    }

    #[test]
    fn docker_chains_are_named_and_other_tables_are_notes() {
        let live = format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT\n{}",
            WANT.replace(
                ":OUTPUT DROP [0:0]\n",
                ":OUTPUT DROP [0:0]\n:DOCKER-USER - [0:0]\n"
            )
            .replace("COMMIT", "-A FORWARD -j DOCKER-USER\nCOMMIT")
        );
        let d = compare("ipv4", &live, Some(WANT));
        assert_eq!(
            d.differences,
            vec![
                "chain DOCKER-USER (Docker's) is live but not in the policy",
                "- -A FORWARD -j DOCKER-USER",
            ]
        );
        assert_eq!(
            d.notes,
            vec!["table nat has 1 rule(s); portcullis loads only the filter table"]
        );
    }

    #[test]
    fn a_family_nobody_loaded_is_missing() {
        for live in [
            "",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
        ] {
            let d = compare("ipv6", live, Some(WANT));
            assert_eq!(d.state, State::Missing, "{live:?}");
        }
    }

    #[test]
    fn an_unmanaged_family_is_not_compared() {
        let d = compare("ipv6", "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n", None);
        assert_eq!(d.state, State::NotManaged);
        assert!(d.differences.is_empty());
    }

    #[test]
    fn drift_is_in_sync_only_when_everything_is() {
        let fam = |state| FamilyDrift {
            family: "ipv4".into(),
            state,
            differences: vec![],
            notes: vec![],
        };
        let persisted = |state| Persisted {
            state,
            root: "/".into(),
            mechanism: None,
            files: vec![],
            reason: None,
        };
        let d =
            |f, p| Drift::new("p.toml".into(), "nft".into(), vec![fam(f)], persisted(p)).in_sync;
        assert!(d(State::InSync, PersistedState::InSync));
        assert!(d(State::NotManaged, PersistedState::Unknown));
        assert!(!d(State::Differs, PersistedState::InSync));
        assert!(!d(State::Missing, PersistedState::InSync));
        assert!(!d(State::InSync, PersistedState::Differs));
    }
}
