#!/usr/bin/env bash
# Run one command on every worker of a TPU VM at once (one process per host), from the
# jaxir checkout tpu/setup.sh installed, with its virtual environment first on PATH.
# FLAG_* variables are assigned by tpu_parse_flags (printf -v), out of shellcheck's sight.
# shellcheck disable=SC2154
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=. # run as `bash run.sh` from tpu/
# shellcheck source=tpu/lib.sh
source "$here/lib.sh"

TPU_VALUE_FLAGS="name zone project log"
TPU_BOOL_FLAGS="detach dry-run"
TPU_REQUIRED_FLAGS="name"
TPU_TAKES_COMMAND=1
TPU_USAGE="usage: tpu/run.sh --name NAME [--zone ZONE] [--project PROJECT] [--detach [--log FILE]]
                   [--dry-run] -- COMMAND [ARG...]

Runs COMMAND on all workers of NAME (gcloud ... ssh --worker=all), in $TPU_REMOTE_SRC
with $TPU_REMOTE_VENV/bin first on PATH. Arguments keep their quoting: each ARG
arrives on the workers as the same single word.

  --name NAME        TPU VM name
  --zone ZONE        its zone (default: gcloud's compute/zone)
  --project PROJECT  its project (default: gcloud's core/project)
  --detach           start COMMAND in the background on each worker (survives the ssh
                     session ending) and return; output goes to --log
  --log FILE         with --detach: the log file on each worker, absolute or relative to
                     $TPU_REMOTE_SRC (default: \$HOME/jaxir-run.log)
  --dry-run          print the gcloud command, run nothing

example:
  tpu/run.sh --name jx --zone us-west4-a -- jaxir train --config configs/dense_msmarco.py \\
      --workdir gs://bucket/runs/r1"

tpu_parse_flags "$@"
((${#TPU_COMMAND[@]} > 0)) ||
  tpu_die "no command to run: put it after '--', e.g. $TPU_SCRIPT --name ${FLAG_name:-jx} -- jaxir train --config CONFIG --workdir gs://BUCKET/runs/r1"
if [[ -n $FLAG_log && -z $FLAG_detach ]]; then
  tpu_die "--log only applies with --detach (without it the output comes back over ssh)"
fi
tpu_require_gcloud

command_line=$(tpu_quote "${TPU_COMMAND[@]}")
if [[ -n $FLAG_detach ]]; then
  # shellcheck disable=SC2016  # $HOME is the worker's
  log='$HOME/jaxir-run.log'
  if [[ -n $FLAG_log ]]; then log=$(tpu_quote "$FLAG_log"); fi
  # Only nohup's process goes to the background, with all three streams redirected, so
  # the ssh session ends at once instead of waiting for the run.
  command_line="{ nohup $command_line > $log 2>&1 < /dev/null & } && echo \"\$(hostname): started, log $log\""
fi
tpu_ssh_all "cd $TPU_REMOTE_SRC && export PATH=\"$TPU_REMOTE_VENV/bin:\$PATH\" && $command_line"
