#!/usr/bin/env bash
# Install everything the tests need (scripts/install.sh --dev), run the gates (ruff check, ruff format
# --check, mypy: the same as .pre-commit-config.yaml), then the whole test suite. A failing gate stops
# the script with its name before any test runs. Extra arguments go to pytest (e.g. `-k langchain`).
# pytest's exit code 5 ("no tests collected", e.g. a -k filter that matches nothing) is reported
# loudly and not turned into a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev || exit $?

# gate NAME COMMAND...: run one gate; on failure name it and exit with its status.
gate() {
  local name=$1
  shift
  echo "==> gate: $name ($*)"
  "$@"
  local rc=$?
  if [[ $rc != 0 ]]; then
    echo "test.sh: FAILED gate '$name' (exit $rc): run \`$*\` and fix what it reports" >&2
    exit $rc
  fi
}
gate "ruff check" python -m ruff check .
gate "ruff format" python -m ruff format --check .
gate "mypy" python -m mypy # files, strictness and stubs: [tool.mypy] in pyproject.toml

export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [[ $rc == 5 ]]; then
  echo "test.sh: WARNING: pytest collected no tests (exit 5): nothing was tested" >&2
  exit 0
fi
exit $rc
