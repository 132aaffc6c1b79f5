#!/usr/bin/env bash
# Install jaxir (with its `tpu` extra: jax[tpu] and libtpu) on every worker of a TPU VM.
#
# How: this copies the local checkout -- every file git tracks plus untracked files it
# does not ignore, so uncommitted edits travel too -- as one tarball to all workers
# (gcloud ... scp --worker=all), unpacks it into $HOME/jaxir (replacing the previous
# copy) and installs it editable into $HOME/jaxir-venv with uv, which also provides the
# Python jax needs (>= 3.11; the TPU images ship an older python3). Rerun it after
# changing code: the virtual environment is kept, so a rerun only reinstalls jaxir.
# FLAG_* variables are assigned by tpu_parse_flags (printf -v), out of shellcheck's sight.
# shellcheck disable=SC2154
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=. # run as `bash setup.sh` from tpu/
# shellcheck source=tpu/lib.sh
source "$here/lib.sh"

TPU_VALUE_FLAGS="name zone project python"
TPU_BOOL_FLAGS="dry-run"
TPU_REQUIRED_FLAGS="name zone"
TPU_USAGE="usage: tpu/setup.sh --name NAME --zone ZONE [--project PROJECT] [--python VERSION] [--dry-run]

Copies this checkout to every worker of NAME and installs jaxir[tpu] there
($TPU_REMOTE_SRC, virtual environment $TPU_REMOTE_VENV).

  --name NAME        TPU VM name
  --zone ZONE        its zone
  --project PROJECT  its project (default: gcloud's core/project)
  --python VERSION   Python for the workers' environment (default: 3.11)
  --dry-run          print the commands, run nothing"

tpu_parse_flags "$@"
tpu_require_gcloud

repo=$(cd "$here/.." && pwd)
if [[ -z $FLAG_dry_run ]]; then
  git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1 ||
    tpu_die "$repo is not a git checkout: tpu/setup.sh copies the files git lists (tracked and untracked-not-ignored)"
fi
tarball="${TMPDIR:-/tmp}/jaxir-src-$FLAG_name.tar.gz"
remote_tarball='jaxir-src.tar.gz' # in the worker's home directory
python_version=${FLAG_python:-3.11}

# 1. Pack the checkout (local).
pack="git -C $(tpu_quote "$repo") ls-files -z --cached --others --exclude-standard"
pack+=" | tar -C $(tpu_quote "$repo") --null -T - -czf $(tpu_quote "$tarball")"
tpu_run bash -o pipefail -c "$pack"
if [[ -z $FLAG_dry_run ]]; then trap 'rm -f "$tarball"' EXIT; fi

# 2. Copy it to every worker.
tpu_target_flags
tpu_run gcloud compute tpus tpu-vm scp "$tarball" "$FLAG_name:$remote_tarball" \
  "${TPU_TARGET[@]}" --worker=all

# 3. Unpack and install on every worker, then check that each host sees its TPU chips.
# shellcheck disable=SC2016  # $HOME is the worker's
uv='$HOME/.local/bin/uv'
install_steps=(
  "set -e"
  "rm -rf $TPU_REMOTE_SRC"
  "mkdir -p $TPU_REMOTE_SRC"
  "tar -xzf \$HOME/$remote_tarball -C $TPU_REMOTE_SRC"
  "rm -f \$HOME/$remote_tarball"
  "if ! test -x $uv; then curl -LsSf https://astral.sh/uv/install.sh -o \$HOME/uv-install.sh; sh \$HOME/uv-install.sh; fi"
  "$uv venv --quiet --allow-existing --python $(tpu_quote "$python_version") $TPU_REMOTE_VENV"
  "$uv pip install --quiet --python $TPU_REMOTE_VENV/bin/python -e \"${TPU_REMOTE_SRC}[tpu]\""
  "$TPU_REMOTE_VENV/bin/python -c 'import jax; print(\"worker\", jax.process_index(), \"local devices:\", jax.local_devices())'"
)
remote=""
for step in "${install_steps[@]}"; do remote+="${remote:+; }$step"; done
tpu_ssh_all "$remote"
