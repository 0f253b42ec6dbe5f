//! The ipsets of an apply: portcullis's own sets (`pc-*`) put in place on the
//! live host without a moment where a rule names a missing or half-filled set.
//!
//! [`load`] creates every set with ONE `ipset restore` under a temporary name
//! (`pc-tmp-N`), then, with a second `ipset restore` of `create`/`swap` lines,
//! creates each real name that does not exist yet (empty: no live rule can name
//! a set that does not exist, so nothing matches it in between) and `swap`s the
//! filled temporary set into it. A rule that matches `pc-bl0-4` keeps matching
//! it throughout: a swap exchanges the contents under the name the rule holds.
//! The temporary sets (now holding the old contents) and every `pc-*` set no
//! live rule references any more are destroyed by [`cleanup`], after the rules
//! are loaded (a set a live rule references cannot be destroyed, and is not
//! tried: `ipset list -t` gives its reference count).
//!
//! Only names that start with `pc-` are ever created, swapped, saved or
//! destroyed; other sets are read by `ipset list -t` and nothing else. `ipset`
//! is the trusted binary (`portcullis_netfilter::bins`, pinned by the guard to
//! the path apply recorded), run through the one runner with an argument
//! vector, never a shell.

use std::collections::BTreeSet;
use std::process::Command;

use portcullis_netfilter::BackendError;

/// The binary, as apply records it.
pub const BINARY: &str = "ipset";
/// Every set portcullis owns starts with this.
pub const PREFIX: &str = "pc-";
/// The temporary names of [`load`]: `pc-tmp-0`, `pc-tmp-1`...
pub const TMP_PREFIX: &str = "pc-tmp-";

/// A set portcullis owns and keeps (not a temporary one).
pub fn ours(name: &str) -> bool {
    name.starts_with(PREFIX) && !name.starts_with(TMP_PREFIX)
}

/// The `i`th temporary name.
pub fn tmp_name(i: usize) -> String {
    format!("{TMP_PREFIX}{i}")
}

/// Run `ipset ARGS` (the trusted binary) with optional stdin.
pub fn ipset(args: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
    let bin = portcullis_netfilter::bins::resolve(BINARY)?;
    let mut cmd = Command::new(&bin);
    cmd.args(args);
    let line = format!("{} {}", bin.display(), args.join(" "));
    portcullis_netfilter::backend::run_prepared(&mut cmd, &line, stdin)
}

/// One set as `ipset save` (or the renderer) writes it: `create NAME OPTIONS`,
/// then `add NAME MEMBER` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    pub name: String,
    /// Everything after `create NAME` (`hash:net family inet hashsize ...`).
    pub create: String,
    /// As written (`ipset save` drops a /32 or /128).
    pub members: Vec<String>,
}

impl SetDef {
    /// The `create` line under `name`.
    pub fn create_line(&self, name: &str) -> String {
        format!("create {name} {}", self.create)
    }
}

/// Parse `ipset save`/`restore` text: `create` and `add` lines (blank lines and
/// `#` comments skipped). An `add` to a set not created before it, a name
/// created twice, or any other line is an error naming the line.
pub fn parse(text: &str) -> Result<Vec<SetDef>, String> {
    let mut out: Vec<SetDef> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        let mut words = line.splitn(3, ' ');
        let (verb, name, rest) = (
            words.next().unwrap_or(""),
            words.next().unwrap_or(""),
            words.next().unwrap_or("").trim(),
        );
        if name.is_empty() || rest.is_empty() {
            return Err(bad("expected `create NAME TYPE...` or `add NAME MEMBER`"));
        }
        match verb {
            "create" => {
                if out.iter().any(|s| s.name == name) {
                    return Err(bad("the set is created twice"));
                }
                out.push(SetDef {
                    name: name.to_owned(),
                    create: rest.to_owned(),
                    members: Vec::new(),
                });
            }
            "add" => match out.iter_mut().rev().find(|s| s.name == name) {
                Some(s) => s.members.push(rest.to_owned()),
                None => return Err(bad("an add to a set not created before it")),
            },
            _ => return Err(bad("expected `create` or `add`")),
        }
    }
    Ok(out)
}

/// A set's header from `ipset list -t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetInfo {
    pub name: String,
    /// How many kernel components (iptables rules) hold it.
    pub references: u64,
    pub entries: u64,
}

/// Parse `ipset list -t`: blocks of `Name:`, ..., `References:`, `Number of
/// entries:` lines.
pub fn parse_list(text: &str) -> Vec<SetInfo> {
    let mut out: Vec<SetInfo> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("Name: ") {
            out.push(SetInfo {
                name: name.trim().to_owned(),
                references: 0,
                entries: 0,
            });
        } else if let Some(last) = out.last_mut() {
            let num = |v: &str| v.trim().parse().unwrap_or(0);
            if let Some(v) = line.strip_prefix("References:") {
                last.references = num(v);
            } else if let Some(v) = line.strip_prefix("Number of entries:") {
                last.entries = num(v);
            }
        }
    }
    out
}

/// Every set of this network namespace, with its references and size.
pub fn list() -> Result<Vec<SetInfo>, BackendError> {
    ipset(&["list", "-t"], None).map(|t| parse_list(&t))
}

/// `ipset save` of every `pc-*` set (temporary ones left out), one `ipset save
/// NAME` each: no other set is read.
pub fn save_ours() -> Result<String, BackendError> {
    let mut out = String::new();
    for info in list()?.iter().filter(|s| ours(&s.name)) {
        out.push_str(&ipset(&["save", &info.name], None)?);
    }
    Ok(out)
}

/// The members of live set `name`, as `ipset save` prints them.
pub fn members(name: &str) -> Result<BTreeSet<String>, String> {
    let text = ipset(&["save", name], None).map_err(|e| e.to_string())?;
    let sets = parse(&text)?;
    Ok(sets
        .into_iter()
        .find(|s| s.name == name)
        .map(|s| s.members.into_iter().collect())
        .unwrap_or_default())
}

/// Put `sets` in place under their own names (see the module doc): one `ipset
/// restore` of the contents under temporary names, then one of the `create`s
/// of missing names and the `swap`s. Stale temporary sets (of an interrupted
/// load) are destroyed first. What stays to destroy is [`cleanup`]'s.
pub fn load(sets: &[SetDef]) -> Result<(), BackendError> {
    if sets.iter().any(|s| !ours(&s.name)) {
        return Err(BackendError::Failed {
            command: "ipset".to_owned(),
            stderr: "refusing to load a set whose name does not start with pc-".to_owned(),
        });
    }
    let live = list()?;
    // Temporary sets nothing references (an interrupted load's) go; one that
    // something references stays, and its name is not used.
    let (stale, taken): (Vec<&SetInfo>, Vec<&SetInfo>) = live
        .iter()
        .filter(|s| s.name.starts_with(TMP_PREFIX))
        .partition(|s| s.references == 0);
    if !stale.is_empty() {
        let text: String = stale
            .iter()
            .map(|s| format!("destroy {}\n", s.name))
            .collect();
        ipset(&["restore"], Some(&text))?;
    }
    if sets.is_empty() {
        return Ok(());
    }
    let mut free = (0..)
        .map(tmp_name)
        .filter(|n| !taken.iter().any(|s| &s.name == n));
    let mut fill = String::new();
    let mut swap = String::new();
    for set in sets {
        let tmp = free.next().expect("the names are endless");
        fill.push_str(&set.create_line(&tmp));
        fill.push('\n');
        for m in &set.members {
            fill.push_str("add ");
            fill.push_str(&tmp);
            fill.push(' ');
            fill.push_str(m);
            fill.push('\n');
        }
        if !live.iter().any(|s| s.name == set.name) {
            swap.push_str(&set.create_line(&set.name));
            swap.push('\n');
        }
        swap.push_str(&format!("swap {tmp} {}\n", set.name));
    }
    ipset(&["restore"], Some(&fill))?;
    ipset(&["restore"], Some(&swap))?;
    Ok(())
}

/// The sets of a rendered policy, as [`load`] takes them.
pub fn of_rendered(rendered: &crate::Rendered) -> Vec<SetDef> {
    rendered
        .sets
        .iter()
        .map(|s| SetDef {
            name: s.name.clone(),
            create: s.options(),
            members: s.nets.iter().map(ToString::to_string).collect(),
        })
        .collect()
}

/// Destroy the temporary sets and every `pc-*` set not in `keep` that no live
/// rule references; returns the names destroyed. A set still referenced (by
/// rules of a family this apply did not touch) is left alone.
pub fn cleanup(keep: &[&str]) -> Result<Vec<String>, BackendError> {
    let gone: Vec<String> = list()?
        .into_iter()
        .filter(|s| s.name.starts_with(PREFIX) && !keep.contains(&s.name.as_str()))
        .filter(|s| s.references == 0)
        .map(|s| s.name)
        .collect();
    if !gone.is_empty() {
        let text: String = gone.iter().map(|n| format!("destroy {n}\n")).collect();
        ipset(&["restore"], Some(&text))?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_save_text_and_refuses_anything_else() {
        let text = "create pc-bl0-4 hash:net family inet hashsize 64 maxelem 65536 bucketsize 12 initval 0x1\n\
                    add pc-bl0-4 198.51.100.0/24\nadd pc-bl0-4 203.0.113.7\n\n# c\n\
                    create pc-ssh-6 hash:net family inet6 hashsize 64 maxelem 65536\n";
        let sets = parse(text).unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].members, ["198.51.100.0/24", "203.0.113.7"]);
        assert_eq!(
            sets[0].create_line("pc-tmp-0"),
            "create pc-tmp-0 hash:net family inet hashsize 64 maxelem 65536 bucketsize 12 initval 0x1"
        );
        assert!(sets[1].members.is_empty());
        assert!(
            parse("add pc-x 192.0.2.1\n")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(parse("flush pc-x\n").is_err());
        assert!(parse("create pc-x\n").is_err());
        let twice = "create pc-x hash:net\ncreate pc-x hash:net\n";
        assert!(parse(twice).unwrap_err().contains("line 2"));
    }

    #[test]
    fn list_headers_give_references_and_sizes() {
        let text = "Name: pc-a-4\nType: hash:net\nRevision: 7\nHeader: family inet hashsize 64\n\
                    Size in memory: 552\nReferences: 1\nNumber of entries: 2\n\n\
                    Name: other\nType: hash:ip\nReferences: 0\nNumber of entries: 0\n";
        assert_eq!(
            parse_list(text),
            [
                SetInfo {
                    name: "pc-a-4".into(),
                    references: 1,
                    entries: 2
                },
                SetInfo {
                    name: "other".into(),
                    references: 0,
                    entries: 0
                }
            ]
        );
        assert!(ours("pc-bl0-4") && !ours("pc-tmp-0") && !ours("other"));
    }

    #[test]
    fn rendered_sets_parse_back() {
        let policy = crate::Policy::parse(
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[[blocklist]]\ncidrs = [\"198.51.100.0/24\", \"2001:db8::/48\"]\n",
            "t.toml",
        )
        .unwrap();
        let sets = of_rendered(&crate::render(&policy));
        let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pc-bl0-4", "pc-bl0-6"]);
        assert_eq!(sets[1].members, ["2001:db8::/48"]);
    }
}
