//! The fallback: `/etc/rc.local` (`/etc/rc.d/rc.local` on the RHEL family) gets one
//! marked block that restores `/etc/iptables/rules.v4` (and `rules.v6`), placed
//! above the first top-level `exit 0` (commands after it never run), with a shebang
//! and mode 0755 (systemd's rc-local generator ignores a file that is not
//! executable). Editing is idempotent: the block is removed and put back, so a
//! second install with the same policy changes nothing.
//!
//! The block never aborts the rest of the file, even under Debian's `#!/bin/sh -e`
//! template: a missing `iptables-restore` or a failed restore prints why on stderr
//! (rc-local.service's journal) and the script goes on. That is fail-open, on
//! purpose: the file was tested at install time, and a deny-all fallback here would
//! lock a remote admin out of a host whose rules merely failed to load. rc.local
//! also runs after the network is up: there is a window at boot with no firewall.
//!
//! A policy with ipsets adds `/etc/iptables/ipsets` (0600), restored with
//! `ipset -exist -file … restore` at the top of the block, ahead of the rules.
//!
//! It refuses a file with unbalanced or repeated markers (edit it by hand).

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::{Family, Rendered};

pub struct RcLocal;

pub const BLOCK_BEGIN: &str = "# BEGIN portcullis";
pub const BLOCK_END: &str = "# END portcullis";
pub const V4: &str = "/etc/iptables/rules.v4";
pub const V6: &str = "/etc/iptables/rules.v6";

/// The block for the rendered families. `-w 10`, never a bare `-w` before the
/// file: iptables-restore's `-w` takes an optional argument and swallows a
/// following FILE as its wait time (legacy then fails "wait seconds not numeric";
/// nft reads an empty stdin and loads nothing).
pub fn block(rendered: &Rendered) -> String {
    let mut s = format!(
        "{BLOCK_BEGIN}\n\
         # Load the default-deny firewall written by `portcullis install`; edit the\n\
         # policy and install again rather than this block. It never aborts the rest\n\
         # of this file (which may run under `sh -e`): a failure is printed instead.\n"
    );
    // The sets before the rules that match them (which do not load without them).
    if !rendered.sets.is_empty() {
        let sets = super::sets::DEBIAN;
        s.push_str(&format!(
            "if command -v ipset >/dev/null 2>&1 && [ -r {sets} ]; then\n\
             \tipset -exist -file {sets} restore || echo \"portcullis: ipset restore of {sets} failed: the rules that match ipsets will NOT load\" >&2 || true\n\
             else\n\
             \techo \"portcullis: ipset or {sets} missing: the rules that match ipsets will NOT load\" >&2 || true\n\
             fi\n"
        ));
    }
    for f in Family::ALL {
        if rendered.get(f).is_none() {
            continue;
        }
        let (bin, path, name) = match f {
            Family::V4 => ("iptables-restore", V4, "IPv4"),
            Family::V6 => ("ip6tables-restore", V6, "IPv6"),
        };
        s.push_str(&format!(
            "if command -v {bin} >/dev/null 2>&1 && [ -r {path} ]; then\n\
             \t{bin} -w 10 {path} || echo \"portcullis: {bin} {path} failed: the {name} firewall is NOT loaded\" >&2 || true\n\
             else\n\
             \techo \"portcullis: {bin} or {path} missing: the {name} firewall is NOT loaded\" >&2 || true\n\
             fi\n"
        ));
    }
    s.push_str(BLOCK_END);
    s.push('\n');
    s
}

/// `current` (the file's text, `None` when it does not exist) with exactly one
/// block, above the first top-level `exit 0`, and a shebang.
pub fn edit(current: Option<&str>, block: &str) -> Result<String, String> {
    let text = current.unwrap_or("");
    let mut lines: Vec<&str> = text.lines().collect();
    let begins: Vec<usize> = positions(&lines, BLOCK_BEGIN);
    let ends: Vec<usize> = positions(&lines, BLOCK_END);
    match (begins.as_slice(), ends.as_slice()) {
        ([], []) => {}
        ([b], [e]) if b < e => {
            lines.drain(*b..=*e);
        }
        _ => {
            return Err(format!(
                "has unbalanced or repeated `{BLOCK_BEGIN}` / `{BLOCK_END}` markers: fix the file by hand, then install again"
            ));
        }
    }
    if !lines.first().is_some_and(|l| l.starts_with("#!")) {
        lines.insert(0, "#!/bin/sh");
    }
    // Only an unindented `exit 0` ends the script for sure; an indented one is
    // inside a branch.
    let at = lines.iter().position(|l| l.trim_end() == "exit 0");
    let mut out = String::new();
    let block_lines: Vec<&str> = block.lines().collect();
    let (before, after) = match at {
        Some(i) => (&lines[..i], &lines[i..]),
        None => (&lines[..], &[][..]),
    };
    for l in before.iter().chain(&block_lines).chain(after) {
        out.push_str(l);
        out.push('\n');
    }
    if at.is_none() && current.is_none() {
        out.push_str("exit 0\n");
    }
    Ok(out)
}

fn positions(lines: &[&str], marker: &str) -> Vec<usize> {
    lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_end() == marker)
        .map(|(i, _)| i)
        .collect()
}

fn script_path(root: &Path) -> Result<&'static str, PersistError> {
    let os = super::detect::os_release(root)?.unwrap_or_default();
    Ok(super::detect::rc_local_path(root, &os))
}

impl Persistence for RcLocal {
    fn mechanism(&self) -> Mechanism {
        Mechanism::RcLocal
    }

    fn loader(&self) -> &'static str {
        "rc-local.service (systemd's rc-local generator, when the file is executable), after the network is up"
    }

    fn plan(&self, root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        let script = script_path(root)?;
        let current = super::atomic::Root::open(root)?.read(Path::new(script))?;
        let text = edit(
            current.as_ref().map(|c| c.contents.as_str()),
            &block(rendered),
        )
        .map_err(|message| PersistError::Edit {
            path: PathBuf::from(script),
            message,
        })?;
        let mut files = ruleset_files(rendered, V4, V6, 0o600);
        files.push(PlannedFile {
            path: PathBuf::from(script),
            contents: text,
            mode: 0o755,
            ruleset: None,
        });
        Ok(files)
    }

    fn files(&self, root: &Path) -> Vec<PathBuf> {
        let script = script_path(root).unwrap_or("/etc/rc.local");
        vec![V4.into(), V6.into(), script.into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_TEMPLATE: &str =
        "#!/bin/sh -e\n#\n# rc.local\n#\n# By default this script does nothing.\n\nexit 0\n";

    fn b() -> String {
        format!("{BLOCK_BEGIN}\nload\n{BLOCK_END}\n")
    }

    #[test]
    fn block_goes_above_exit_0_once() {
        let once = edit(Some(DEBIAN_TEMPLATE), &b()).unwrap();
        assert_eq!(
            once,
            "#!/bin/sh -e\n#\n# rc.local\n#\n# By default this script does nothing.\n\n# BEGIN portcullis\nload\n# END portcullis\nexit 0\n"
        );
        assert_eq!(edit(Some(&once), &b()).unwrap(), once);
    }

    #[test]
    fn new_file_gets_shebang_and_exit() {
        assert_eq!(
            edit(None, &b()).unwrap(),
            "#!/bin/sh\n# BEGIN portcullis\nload\n# END portcullis\nexit 0\n"
        );
    }

    #[test]
    fn missing_shebang_is_added_and_block_replaced() {
        let old = format!("echo hi\n{BLOCK_BEGIN}\nold\n{BLOCK_END}\nexit 0\n");
        assert_eq!(
            edit(Some(&old), &b()).unwrap(),
            "#!/bin/sh\necho hi\n# BEGIN portcullis\nload\n# END portcullis\nexit 0\n"
        );
    }

    #[test]
    fn unbalanced_markers_are_refused() {
        assert!(edit(Some(&format!("#!/bin/sh\n{BLOCK_BEGIN}\nexit 0\n")), &b()).is_err());
    }
}
