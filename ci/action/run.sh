#!/usr/bin/env bash
# The steps of the portcullis GitHub Action (action.yml at the repository root),
# one subcommand per step, so a test can run them exactly as the action does
# (installer/tests/it/action.rs) with GITHUB_STEP_SUMMARY pointing at a file.
#
#   run.sh deps      install iptables, conntrack and OpenSSH when missing (apt)
#   run.sh install   build portcullis from this checkout with cargo; prints bin=PATH
#                    to $GITHUB_OUTPUT
#   run.sh verify    portcullis verify (as root) on $PORTCULLIS_POLICY; the matrix
#                    goes to the log and, as a Markdown table, to $GITHUB_STEP_SUMMARY
#   run.sh test      portcullis test (as root) on $PORTCULLIS_SCENARIOS, JUnit XML to
#                    $PORTCULLIS_JUNIT; the trials and failures to $GITHUB_STEP_SUMMARY
#
# Inputs arrive as environment variables (never spliced into a shell string):
# PORTCULLIS_POLICY, PORTCULLIS_RULES_V4, PORTCULLIS_RULES_V6, PORTCULLIS_ROOT,
# PORTCULLIS_SCENARIOS (paths separated by whitespace), PORTCULLIS_BACKEND (nft,
# legacy, all), PORTCULLIS_JUNIT, PORTCULLIS_BIN (default: portcullis on PATH).
# Exit status: that of portcullis (0 held, 1 a mismatch, 2 bad input).
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

summary() {
  if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then cat >>"$GITHUB_STEP_SUMMARY"; else cat >/dev/null; fi
}

bin() {
  local b=${PORTCULLIS_BIN:-}
  if [ -z "$b" ]; then
    b=$(command -v portcullis) || { echo "portcullis not found on PATH (set PORTCULLIS_BIN)" >&2; exit 2; }
  fi
  printf '%s\n' "$b"
}

deps() {
  local missing=() p
  for p in iptables ipset conntrack openssh-server openssh-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if ((${#missing[@]})); then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  as_root mkdir -p /run/sshd
  for m in nf_conntrack nf_tables ip_tables ip6_tables iptable_filter ip6table_filter veth; do
    as_root modprobe -q "$m" 2>/dev/null || true
  done
}

install() {
  local root=${PORTCULLIS_INSTALL_ROOT:-${RUNNER_TEMP:-$here/target}/portcullis}
  CARGO_TARGET_DIR="$here/target" cargo install --locked --path "$here/installer" --root "$root"
  if [ -n "${GITHUB_OUTPUT:-}" ]; then printf 'bin=%s\n' "$root/bin/portcullis" >>"$GITHUB_OUTPUT"; fi
  "$root/bin/portcullis" --version
}

verify() {
  [ -n "${PORTCULLIS_POLICY:-}" ] || { echo "the policy input is required" >&2; exit 2; }
  local b args out status=0
  b=$(bin)
  args=(verify --config "$PORTCULLIS_POLICY" --backend "${PORTCULLIS_BACKEND:-all}" --markdown)
  if [ -n "${PORTCULLIS_RULES_V4:-}" ]; then args+=(--rules-v4 "$PORTCULLIS_RULES_V4"); fi
  if [ -n "${PORTCULLIS_RULES_V6:-}" ]; then args+=(--rules-v6 "$PORTCULLIS_RULES_V6"); fi
  if [ -n "${PORTCULLIS_ROOT:-}" ]; then args+=(--root "$PORTCULLIS_ROOT"); fi
  out=$(mktemp)
  as_root "$b" "${args[@]}" >"$out" || status=$?
  cat "$out"
  if [ -s "$out" ]; then
    summary <"$out"
  else
    printf '### portcullis verify: could not run (exit %s); see the log\n' "$status" | summary
  fi
  printf '\n' | summary
  rm -f "$out"
  return "$status"
}

test_() {
  local b paths out status=0 junit=${PORTCULLIS_JUNIT:-}
  b=$(bin)
  read -r -d '' -a paths <<<"${PORTCULLIS_SCENARIOS:-}" || true
  ((${#paths[@]})) || { echo "no scenario paths given" >&2; exit 2; }
  local args=(test --color never --backend "${PORTCULLIS_BACKEND:-all}")
  if [ -n "$junit" ]; then args+=(--junit "$junit"); fi
  out=$(mktemp)
  as_root "$b" "${args[@]}" -- "${paths[@]}" >"$out" || status=$?
  cat "$out"
  if [ -n "$junit" ] && [ -n "${GITHUB_OUTPUT:-}" ]; then printf 'junit=%s\n' "$junit" >>"$GITHUB_OUTPUT"; fi
  {
    printf '### portcullis test: %s\n\n' "$(grep '^test result:' "$out" || echo "could not run (exit $status); see the log")"
    if grep -q '^test .* \.\.\. ' "$out"; then
      printf '| trial | result |\n|---|---|\n'
      sed -n 's/^test \(.*\) \.\.\. \(.*\)$/| `\1` | \2 |/p' "$out"
      printf '\n'
    fi
    if grep -q '^---- ' "$out"; then
      printf '<details><summary>failures</summary>\n\n```text\n'
      sed -n '/^failures:$/,/^test result:/p' "$out" | sed '$d'
      printf '```\n\n</details>\n'
    fi
    printf '\n'
  } | summary
  rm -f "$out"
  return "$status"
}

case "${1:-}" in
  deps) deps ;;
  install) install ;;
  verify) verify ;;
  test) test_ ;;
  *) echo "usage: $0 deps|install|verify|test" >&2; exit 2 ;;
esac
