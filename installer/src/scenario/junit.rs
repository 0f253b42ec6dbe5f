//! JUnit XML for CI test reporters (GitHub's and GitLab's read the same subset):
//! one `<testsuite>`, one `<testcase>` per trial, a failed trial's text (the
//! matrix) in its `<failure>` body, an ignored one `<skipped>`. Written by hand:
//! the format needs only an escaper.

use std::io::{self, Write};
use std::path::Path;

/// One trial's result.
#[derive(Debug, Clone)]
pub struct Case<'a> {
    /// The trial name, `area::file::backend`.
    pub name: &'a str,
    /// The scenario name, `area::file` (reporters group by it).
    pub classname: &'a str,
    pub file: &'a Path,
    pub seconds: f64,
    pub result: CaseResult<'a>,
}

#[derive(Debug, Clone)]
pub enum CaseResult<'a> {
    Passed,
    /// The first line is the message; the whole text is the body.
    Failed(&'a str),
    Skipped(&'a str),
}

/// Text content: `&`, `<`, `>` escaped; characters XML 1.0 cannot carry at all
/// (control characters other than tab, newline, carriage return) become `?`.
pub fn escape_text(s: &str) -> String {
    escape(s, false)
}

/// An attribute value in double quotes: also `"`, and line breaks and tabs as
/// character references (a parser would fold them into spaces).
pub fn escape_attr(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, attr: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\n' if attr => out.push_str("&#10;"),
            '\r' if attr => out.push_str("&#13;"),
            '\t' if attr => out.push_str("&#9;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Write the report of `cases` as one test suite named `suite`.
pub fn write(suite: &str, seconds: f64, cases: &[Case<'_>], w: &mut dyn Write) -> io::Result<()> {
    let failures = cases
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Failed(_)))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| matches!(c.result, CaseResult::Skipped(_)))
        .count();
    let suite = escape_attr(suite);
    writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        w,
        r#"<testsuites name="{suite}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{seconds:.3}">"#,
        cases.len()
    )?;
    writeln!(
        w,
        r#"  <testsuite name="{suite}" tests="{}" failures="{failures}" errors="0" skipped="{skipped}" time="{seconds:.3}">"#,
        cases.len()
    )?;
    for c in cases {
        let open = format!(
            r#"    <testcase name="{}" classname="{}" file="{}" time="{:.3}""#,
            escape_attr(c.name),
            escape_attr(c.classname),
            escape_attr(&c.file.display().to_string()),
            c.seconds
        );
        match c.result {
            CaseResult::Passed => writeln!(w, "{open}/>")?,
            CaseResult::Failed(text) => {
                let message = text.lines().next().unwrap_or("failed");
                writeln!(w, "{open}>")?;
                writeln!(
                    w,
                    r#"      <failure message="{}" type="mismatch">{}</failure>"#,
                    escape_attr(message),
                    escape_text(text)
                )?;
                writeln!(w, "    </testcase>")?;
            }
            CaseResult::Skipped(reason) => {
                writeln!(w, "{open}>")?;
                writeln!(w, r#"      <skipped message="{}"/>"#, escape_attr(reason))?;
                writeln!(w, "    </testcase>")?;
            }
        }
    }
    writeln!(w, "  </testsuite>")?;
    writeln!(w, "</testsuites>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup_and_no_forbidden_characters() {
        assert_eq!(
            escape_text("a<b>&c\"\n\u{1b}[31m"),
            "a&lt;b&gt;&amp;c\"\n?[31m"
        );
        assert_eq!(escape_attr("x=\"1\"\n\ty"), "x=&quot;1&quot;&#10;&#9;y");
        assert_eq!(escape_text("]]> é"), "]]&gt; é");
    }

    #[test]
    fn every_case_is_written_with_its_result() {
        let f = Path::new("/s/a&b.toml");
        let cases = [
            Case {
                name: "web::a::nft",
                classname: "web::a",
                file: f,
                seconds: 1.5,
                result: CaseResult::Passed,
            },
            Case {
                name: "web::a::legacy",
                classname: "web::a",
                file: f,
                seconds: 2.0,
                result: CaseResult::Failed("first <line>\nMISMATCH nft admin -> target"),
            },
            Case {
                name: "web::b::nft",
                classname: "web::b",
                file: f,
                seconds: 0.0,
                result: CaseResult::Skipped("not root"),
            },
        ];
        let mut out = Vec::new();
        write("portcullis", 3.5, &cases, &mut out).unwrap();
        let xml = String::from_utf8(out).unwrap();
        assert!(
            xml.contains(r#"tests="3" failures="1" errors="0" skipped="1""#),
            "{xml}"
        );
        assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
        assert!(
            xml.contains(
                r#"<failure message="first &lt;line&gt;" type="mismatch">first &lt;line&gt;
MISMATCH nft admin -&gt; target</failure>"#
            ),
            "{xml}"
        );
        assert!(xml.contains(r#"file="/s/a&amp;b.toml""#), "{xml}");
    }
}
