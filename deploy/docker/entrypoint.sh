#!/bin/sh
# The images' entry point (installed as /usr/local/bin/impetus-entrypoint).
#   serve [FLAGS]   `impetus serve` (the default; FLAGS alone also mean serve). It replaces this
#                   shell (exec), so the SIGTERM of `docker stop` or Kubernetes reaches impetus,
#                   which drains its requests before it exits.
#   healthcheck     exit 0 when /health and /ready both answer 200 (the image's HEALTHCHECK).
#   anything else   run as a command: `impetus models pull ...`, `impetus backup ...`, `sh`.
# Settings come from IMPETUS_* variables (docs/configuration.md). The API key: IMPETUS_API_KEY,
# or IMPETUS_API_KEY_FILE naming a file that holds it (a Docker or Kubernetes secret).
set -eu

die() {
    echo "impetus-entrypoint: $*" >&2
    exit 2
}

load_key() {
    if [ -n "${IMPETUS_API_KEY_FILE:-}" ]; then
        [ -z "${IMPETUS_API_KEY:-}" ] || die "set IMPETUS_API_KEY or IMPETUS_API_KEY_FILE, not both"
        [ -r "$IMPETUS_API_KEY_FILE" ] || die "cannot read IMPETUS_API_KEY_FILE=$IMPETUS_API_KEY_FILE"
        # the file's content, without the line ends editors and `echo` add
        IMPETUS_API_KEY=$(tr -d '\r\n' <"$IMPETUS_API_KEY_FILE")
        [ -n "$IMPETUS_API_KEY" ] || die "IMPETUS_API_KEY_FILE=$IMPETUS_API_KEY_FILE is empty"
        export IMPETUS_API_KEY
        unset IMPETUS_API_KEY_FILE
    fi
}

check_home() {
    home=${IMPETUS_HOME:?IMPETUS_HOME is not set}
    uid=$(id -u)
    # a volume mounted from the host keeps the host's owner: say so, rather than fail later
    # in the middle of a model download
    mkdir -p "$home" 2>/dev/null || die "cannot create IMPETUS_HOME=$home as uid $uid"
    probe="$home/.impetus-write-test.$$"
    if ! (: >"$probe") 2>/dev/null; then
        die "IMPETUS_HOME=$home is not writable by uid $uid: chown -R $uid:$(id -g) the volume"
    fi
    rm -f "$probe"
}

healthcheck() {
    exec python - <<'PY'
import os
import ssl
import sys
import urllib.error
import urllib.request

tls = bool(os.environ.get("IMPETUS_CERTFILE"))
base = f"{'https' if tls else 'http'}://127.0.0.1:{os.environ.get('IMPETUS_PORT', '8000')}"
context = None
if tls:
    # a probe of this container's own server on loopback: it checks that the server answers,
    # not who it is (its certificate names the public host, not 127.0.0.1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
for path in ("/health", "/ready"):
    try:
        with urllib.request.urlopen(base + path, timeout=4, context=context) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError as e:
        print(f"{path}: {e}")
        sys.exit(1)
    if status != 200:
        print(f"{path}: HTTP {status}")
        sys.exit(1)
print("healthy")
PY
}

if [ $# -eq 0 ]; then
    set -- serve
fi
case "$1" in
-*) set -- serve "$@" ;;
esac

case "$1" in
serve)
    shift
    load_key
    check_home
    exec impetus serve "$@"
    ;;
healthcheck)
    healthcheck
    ;;
*)
    exec "$@"
    ;;
esac
