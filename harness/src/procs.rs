//! The process tree as /proc shows it. sshd's per-connection processes call
//! setsid(2), so neither a process group nor a parent-death signal reaches them:
//! walking the tree in /proc is the only reliable handle on them. Read only: it
//! signals nothing (`probe::raw::kill_tree` does, with this list).

/// Every process descended from `root`, `root` first, parents before children.
/// A process that exits during the walk is simply missed or listed stale.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and
        // parentheses, so split after the last ')'.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(parents.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_child_is_a_descendant() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let tree = super::descendants(me);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(tree[0], me);
        assert!(tree.contains(&child.id()), "{tree:?}");
        assert_eq!(super::descendants(u32::MAX), [u32::MAX]);
    }
}
