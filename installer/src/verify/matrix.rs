//! The reachability matrix: one row per probe (host x service x family) with the
//! expected outcome, the observed one, and the rule that counted it. Printing
//! only; the rows are made by the runner.

use std::io::{self, Write};

use portcullis_harness::probe::Outcome;
use portcullis_harness::{Backend, Evidence};

use super::counters::{check, counted, counted_anywhere};
use super::model::{CountedBy, Expectation};

/// One probed promise.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    #[serde(serialize_with = "ser_backend")]
    pub backend: Backend,
    #[serde(flatten)]
    pub expectation: Expectation,
    pub observed: Outcome,
    /// What counted the probe: the expected rule when it did, else every rule and
    /// policy whose counter moved (conntrack's ESTABLISHED rule left out).
    pub counted: Vec<String>,
    /// Empty when the row passed.
    pub problems: Vec<String>,
}

/// A backend in JSON: its name.
pub(super) fn ser_backend<S: serde::Serializer>(b: &Backend, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.name())
}

impl Row {
    /// Judge `ev` (the probe's outcome and its family's `filter` counters) against
    /// `expectation`.
    pub fn judge(backend: Backend, expectation: Expectation, ev: &Evidence) -> Row {
        let problems = check(&expectation, ev).err().unwrap_or_default();
        let by_count = expectation
            .counted_by
            .as_ref()
            .filter(|by| **by != CountedBy::AnyDrop)
            .and_then(|by| Some((by, counted(&ev.counters, by)?)));
        let counted = match by_count {
            Some((by, n)) if n > 0 => vec![format!("{by} (+{n})")],
            _ => counted_anywhere(&ev.counters),
        };
        Row {
            backend,
            expectation,
            observed: ev.outcome.clone(),
            counted,
            problems,
        }
    }

    /// A row for a probe that could not run at all (the lab failed under it).
    pub fn error(backend: Backend, expectation: Expectation, error: String) -> Row {
        Row {
            backend,
            expectation,
            observed: Outcome::Failed(error.clone()),
            counted: Vec::new(),
            problems: vec![format!("the probe could not run: {error}")],
        }
    }

    pub fn pass(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Print the matrix as an aligned table, then each failed row's reasons.
pub fn print(rows: &[Row], w: &mut dyn Write) -> io::Result<()> {
    print_table(rows, w)?;
    print_quiet(rows, w)
}

/// Only each failed row's reasons and the one-line summary (`verify --quiet`).
pub fn print_quiet(rows: &[Row], w: &mut dyn Write) -> io::Result<()> {
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.pass()).collect();
    for r in &failed {
        let e = &r.expectation;
        writeln!(
            w,
            "MISMATCH {} {} -> {} {} {}",
            r.backend,
            e.probe.from,
            e.probe.to,
            e.probe.service(),
            e.probe.family,
        )?;
        for line in wrap("  promise: ", &e.why) {
            writeln!(w, "{line}")?;
        }
        for p in &r.problems {
            for line in wrap("  - ", p) {
                writeln!(w, "{line}")?;
            }
        }
        writeln!(w)?;
    }
    writeln!(
        w,
        "{} probes: {} as promised, {} mismatched",
        rows.len(),
        rows.len() - failed.len(),
        failed.len()
    )
}

/// A row's cells in both tables, the verdict aside: backend, from, to, service,
/// family, expected, observed, counted by (`-` when no rule counted it).
fn cells(r: &Row) -> [String; 8] {
    let e = &r.expectation;
    [
        r.backend.to_string(),
        e.probe.from.to_string(),
        e.probe.to.to_string(),
        e.probe.service(),
        e.probe.family.to_string(),
        e.expect.to_string(),
        r.observed.word().to_owned(),
        if r.counted.is_empty() {
            "-".to_owned()
        } else {
            r.counted.join(", ")
        },
    ]
}

/// The aligned table, one row per probe, and a blank line.
fn print_table(rows: &[Row], w: &mut dyn Write) -> io::Result<()> {
    let header = [
        "backend",
        "from",
        "to",
        "service",
        "family",
        "expected",
        "observed",
        "counted by",
        "",
    ];
    let mut table: Vec<Vec<String>> = vec![header.map(str::to_owned).to_vec()];
    for r in rows {
        let verdict = if r.pass() { "ok" } else { "MISMATCH" };
        table.push(cells(r).into_iter().chain([verdict.to_owned()]).collect());
    }
    let mut widths = [0usize; 9];
    for row in &table {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    for row in &table {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        writeln!(w, "{}", line.trim_end())?;
    }
    writeln!(w)
}

/// The width a mismatch report fits in: a default terminal.
pub const WIDTH: usize = 80;

/// `text` after `lead`, wrapped at word boundaries to `WIDTH` columns with the
/// continuation lines indented under the text. A word longer than a line (a long
/// rule spec) gets a line of its own rather than being cut.
fn wrap(lead: &str, text: &str) -> Vec<String> {
    let indent = " ".repeat(lead.chars().count().min(8));
    let mut lines = Vec::new();
    let mut line = lead.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        let len = line.chars().count();
        if !empty && len + 1 + word.chars().count() > WIDTH {
            lines.push(std::mem::replace(&mut line, indent.clone()));
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    lines.push(line);
    lines
}

/// A table cell in GitHub-flavoured Markdown: `|` escaped, line breaks folded,
/// and `<`, `>`, `&` escaped so nothing renders as HTML.
fn md_cell(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// Print the matrix as a GitHub-flavoured Markdown table (for
/// `$GITHUB_STEP_SUMMARY`), then each failed row's reasons and the count line.
pub fn markdown(rows: &[Row], w: &mut dyn Write) -> io::Result<()> {
    writeln!(
        w,
        "| | backend | from | to | service | family | expected | observed | counted by |"
    )?;
    writeln!(w, "|---|---|---|---|---|---|---|---|---|")?;
    for r in rows {
        let verdict = if r.pass() { "ok" } else { "**MISMATCH**" };
        let cells: Vec<String> = std::iter::once(verdict.to_owned())
            .chain(cells(r))
            .map(|c| md_cell(&c))
            .collect();
        writeln!(w, "| {} |", cells.join(" | "))?;
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.pass()).collect();
    if !failed.is_empty() {
        writeln!(w)?;
    }
    for r in &failed {
        let e = &r.expectation;
        let problems: Vec<String> = r.problems.iter().map(|p| md_cell(p)).collect();
        writeln!(
            w,
            "- **MISMATCH** {} {} -> {} {} {} ({}): {}",
            r.backend,
            e.probe.from,
            e.probe.to,
            md_cell(&e.probe.service()),
            e.probe.family,
            md_cell(&e.why),
            problems.join("; ")
        )?;
    }
    writeln!(
        w,
        "\n{} probes: {} as promised, {} mismatched",
        rows.len(),
        rows.len() - failed.len(),
        failed.len()
    )
}

#[cfg(test)]
mod tests {
    use super::super::model::*;
    use super::*;
    use portcullis_harness::{Counters, Family};

    #[test]
    fn wrap_fits_the_width_and_keeps_every_word() {
        let text = "`INPUT -p tcp -m tcp --dport 22 -j ACCEPT` did not count it (counted instead: INPUT policy (+3), OUTPUT policy (+1), FORWARD policy (+0))";
        let lines = wrap("  - ", text);
        assert!(lines.len() > 1, "{lines:?}");
        assert!(
            lines.iter().all(|l| l.chars().count() <= WIDTH),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("    "), "{lines:?}");
        let words: Vec<&str> = lines.iter().flat_map(|l| l.split_whitespace()).collect();
        assert_eq!(words[1..].join(" "), text);
    }

    #[test]
    fn matrix_names_the_counting_rule_and_the_mismatches() {
        let exp = |kind, from, to, expect: &str, by: &str| Expectation {
            probe: ProbeSpec {
                kind,
                from,
                to,
                family: Family::V4,
                port: Some(22),
                count: None,
            },
            expect: expect.parse().unwrap(),
            counted_by: Some(by.parse().unwrap()),
            why: "ssh.allow_from".into(),
        };
        let save = |n| format!("*filter\n:INPUT DROP [{n}:60]\n:FORWARD DROP [0:0]\nCOMMIT\n");
        let before = Counters::parse(Family::V4, &save(0)).unwrap();
        let counted = Counters::parse(Family::V4, &save(1))
            .unwrap()
            .since(&before);
        let obs = Evidence {
            outcome: Outcome::NoAnswer,
            counters: counted,
        };
        let rows = vec![
            Row::judge(
                Backend::Nft,
                exp(
                    ProbeKind::Ssh,
                    HostId::Outsider,
                    HostId::Target,
                    "no-answer",
                    "INPUT policy",
                ),
                &obs,
            ),
            Row::judge(
                Backend::Legacy,
                exp(
                    ProbeKind::Ssh,
                    HostId::Admin,
                    HostId::Target,
                    "ok",
                    "INPUT policy",
                ),
                &obs,
            ),
        ];
        let mut out = Vec::new();
        print(&rows, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.contains("INPUT policy (+1)"), "{out}");
        assert!(
            out.contains("MISMATCH legacy admin -> target ssh ipv4\n  promise: ssh.allow_from\n"),
            "{out}"
        );
        let mismatch = &out[out.find("MISMATCH").unwrap()..];
        assert!(
            mismatch.lines().all(|l| l.chars().count() <= WIDTH),
            "{mismatch}"
        );
        assert!(!out.contains("NoAnswer"), "Debug formatting in {out}");
        assert!(
            out.contains("2 probes: 1 as promised, 1 mismatched"),
            "{out}"
        );

        let mut md = Vec::new();
        markdown(&rows, &mut md).unwrap();
        let md = String::from_utf8(md).unwrap();
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "| | backend | from | to | service | family | expected | observed | counted by |",
                "|---|---|---|---|---|---|---|---|---|",
                "| ok | nft | outsider | target | ssh | ipv4 | no-answer | no-answer | INPUT policy (+1) |",
                "| **MISMATCH** | legacy | admin | target | ssh | ipv4 | ok | no-answer | INPUT policy (+1) |",
            ],
            "{md}"
        );
        assert!(
            md.contains("- **MISMATCH** legacy admin -> target ssh ipv4"),
            "{md}"
        );
        assert!(
            md.ends_with("2 probes: 1 as promised, 1 mismatched\n"),
            "{md}"
        );
        assert_eq!(md_cell("a|b\n<c>"), "a\\|b &lt;c&gt;");
    }
}
