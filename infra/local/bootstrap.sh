#!/usr/bin/env bash
# Installs everything the local stack and the tests need, on a fresh Debian 12 machine:
# MariaDB and Redis from Debian, the project virtualenv (.venv), LocalStack's own virtualenv
# (.local/venvs/localstack) and the development OpenID provider's (.local/venvs/oidc).
# Idempotent and non-interactive; quick when done before. `--with-load` also makes Locust's
# (.local/venvs/load), which only `make load` needs.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { printf '[bootstrap] %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# --- Debian packages -------------------------------------------------------------------------
missing=()
[ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
[ -x /usr/bin/mariadb ] || missing+=(mariadb-client)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

# --- Python: 3.12 (the Lambda runtime) where pyenv or the system has it, else python3 >= 3.11 --
pick_python() {
  local root candidate
  if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for candidate in "$root"/versions/3.12.*/bin/python3.12; do
      [ -x "$candidate" ] && { echo "$candidate"; return; }
    done
  fi
  for candidate in python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      command -v "$candidate"; return
    fi
  done
  echo "no Python >= 3.11 found" >&2; exit 1
}
PYTHON=${PYTHON:-$(pick_python)}

# The virtualenvs are made and filled by uv: it installs from its own cache, shared by every
# checkout on the machine, so a fresh clone's venvs take seconds, not the minutes pip takes
# downloading everything again. uv itself comes from PyPI once, with pip, into a venv of its
# own (its pin follows pyproject's `uv>=0.9,<1`).
UV_PIN="uv==0.13.9"
UV=.local/venvs/uv/bin/uv
mkdir -p .local/venvs
if ! [ -x "$UV" ] || [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "${UV_PIN#uv==}" ]; then
  say "installing $UV_PIN"
  [ -x .local/venvs/uv/bin/python ] || "$PYTHON" -m venv .local/venvs/uv
  # pip, minus the warnings some machines' pip.conf prints for every missing local index
  # entry; pip's own exit status is kept (pipefail).
  { .local/venvs/uv/bin/python -m pip -q install "$UV_PIN" 2>&1 1>&3 |
    { grep -v 'is ignored: it is neither' || true; } >&2; } 3>&1
fi

# A virtualenv is (re)built when missing, broken or made from another interpreter, and its
# packages reinstalled when the file that pins them changed (a stamp holds its hash).
ensure_venv() {  # dir, stamp-source-text, requirements...
  local dir=$1 wanted=$2; shift 2
  local stamp="$dir/.giftmarket-stamp"
  local want_stamp; want_stamp="$("$PYTHON" -c 'import sys; print(sys.version)') $wanted"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && "$dir/bin/python" -c '' 2>/dev/null; then
    return
  fi
  say "building $dir with $PYTHON"
  # --seed: pip in it too, for the tools that call `python -m pip` themselves.
  [ -x "$dir/bin/python" ] || "$UV" venv --quiet --seed --python "$PYTHON" "$dir"
  # --compile-bytecode, as pip does: where PYTHONDONTWRITEBYTECODE is set (these machines),
  # a venv without .pyc files compiles every module it imports again in every process (a
  # CLI or the runner: 2.8 s of imports instead of 0.9).
  "$UV" pip install --quiet --compile-bytecode --python "$dir/bin/python" "$@"
  echo "$want_stamp" >"$stamp"
}

ensure_venv .venv "$(sha256sum pyproject.toml | cut -d' ' -f1)" -e '.[dev]'

# LocalStack without Docker: these pins are known to work on these machines (ARCHITECTURE.md).
LOCALSTACK_PINS=("localstack-core[runtime]==4.13.1" "cryptography<44" "pyopenssl==24.2.1"
  "service_identity<24.2" "cbor2<5.7")
ensure_venv .local/venvs/localstack "${LOCALSTACK_PINS[*]}" "${LOCALSTACK_PINS[@]}"

# AWS SAM CLI for `sam validate --lint` (make lint) and `sam build`, in its own virtualenv:
# its pins (boto3, cfn-lint, pydantic...) are not the project's to follow.
SAM_PINS=("aws-sam-cli==1.170.0")
ensure_venv .local/venvs/sam "${SAM_PINS[*]}" "${SAM_PINS[@]}"

# checkov for the policy check (infra/checks/policy.py, make lint), in its own virtualenv too;
# the SAM translation it checks is done by the SAM CLI's own aws-sam-translator, above.
CHECKOV_PINS=("checkov==3.3.30")
ensure_venv .local/venvs/checkov "${CHECKOV_PINS[*]}" "${CHECKOV_PINS[@]}"

# The development OpenID provider the local stack registers as `local` (social sign-in), in its
# own virtualenv: its Flask/authlib pins are not the project's to follow.
OIDC_PINS=("oidc-provider-mock==0.4.8")
ensure_venv .local/venvs/oidc "${OIDC_PINS[*]}" "${OIDC_PINS[@]}"

# Locust for `make load` (tests/load/), on request only: `make run` and `make test` do not wait
# for it, and gevent's monkey-patching never reaches the project's virtualenv.
if [ "${1:-}" = "--with-load" ]; then
  LOAD_PINS=("locust==2.47.0")
  ensure_venv .local/venvs/load "${LOAD_PINS[*]}" "${LOAD_PINS[@]}"
fi
