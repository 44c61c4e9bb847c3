#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client (cases 1-10) against the engine's WebSocket path.
#
# autobahntestsuite 0.8.2 runs on Python 2.7 only. This script makes a Python 2.7 virtualenv for
# it (pinned by constraints.txt), starts tests/autobahn/echo_server.py (the engine's own server
# and codec with an echo loop in place of the session), runs `wstest -m fuzzingclient` on cases
# 1.* to 10.* (12.* and 13.* are permessage-deflate, which the engine does not negotiate) and
# prints the counts from the report. See docs/autobahn.md.
#
# Environment:
#   AUTOBAHN_PYTHON2  the Python 2.7 interpreter (default: python2.7 on PATH)
#   PYTHON            the Python 3 with scaivoice installed (default: python3, else python)
#   AUTOBAHN_WORK     where the virtualenv and the reports go (default: $TMPDIR/scaivoice-autobahn)
#   AUTOBAHN_CASES    the cases to run, comma-separated (default: 1.*,...,10.*)
# Exit status: 0 when no case FAILED, 1 otherwise (2: the run itself could not be made).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
py2="${AUTOBAHN_PYTHON2:-$(command -v python2.7 || true)}"
py3="${PYTHON:-$(command -v python3 || command -v python)}"
work="${AUTOBAHN_WORK:-${TMPDIR:-/tmp}/scaivoice-autobahn}"
cases="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*}"

if [ -z "$py2" ] || ! "$py2" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))'; then
    echo "autobahntestsuite needs Python 2.7: put python2.7 on PATH or set AUTOBAHN_PYTHON2" >&2
    exit 2
fi
mkdir -p "$work"
venv="$work/venv"

# 1. The Python 2.7 virtualenv (virtualenv < 20.22 still makes 2.7 environments).
if [ ! -x "$venv/bin/wstest" ]; then
    if ! "$py2" -m virtualenv --version >/dev/null 2>&1; then
        "$py2" -m pip install --quiet --target "$work/bootstrap" "virtualenv<20.22"
        export PYTHONPATH="$work/bootstrap"
    fi
    "$py2" -m virtualenv --quiet "$venv"
    unset PYTHONPATH
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -c "$here/constraints.txt" "autobahntestsuite==0.8.2"
fi

# 2. The echo server on a free loopback port.
url_file="$work/url"
rm -f "$url_file"
"$py3" "$here/echo_server.py" --host 127.0.0.1 --port 0 --url-file "$url_file" \
    >"$work/echo_server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    [ -s "$url_file" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/echo_server.log" >&2; exit 2; }
    sleep 0.1
done
[ -s "$url_file" ] || { echo "the echo server did not start" >&2; exit 2; }
url="$(cat "$url_file")"

# 3. The fuzzing client.
reports="$work/reports"
rm -rf "$reports"
case_list="$(printf '"%s",' ${cases//,/ })"
cat >"$work/fuzzingclient.json" <<EOF
{
  "outdir": "$reports",
  "servers": [{"agent": "scaivoice", "url": "$url"}],
  "cases": [${case_list%,}],
  "exclude-cases": ["12.*", "13.*"],
  "exclude-agent-cases": {}
}
EOF
echo "fuzzing $url (cases $cases); reports in $reports"
(cd "$work" && "$venv/bin/wstest" -m fuzzingclient -s "$work/fuzzingclient.json") \
    >"$work/wstest.log" 2>&1 || { tail -20 "$work/wstest.log" >&2; exit 2; }

# 4. The counts.
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
trap - EXIT
if grep -q "Traceback" "$work/echo_server.log"; then
    echo "the echo server logged a traceback: see $work/echo_server.log" >&2
fi
"$py3" "$here/summarize.py" "$reports"
