#!/usr/bin/env bash
# Stop (single-host TPU VMs) or delete a TPU VM. A multi-host pod slice cannot be
# stopped, only deleted; a stopped TPU VM is not billed for its chips.
# FLAG_* variables are assigned by tpu_parse_flags (printf -v), out of shellcheck's sight.
# shellcheck disable=SC2154
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=. # run as `bash stop.sh` from tpu/
# shellcheck source=tpu/lib.sh
source "$here/lib.sh"

TPU_VALUE_FLAGS="name zone project"
TPU_BOOL_FLAGS="delete dry-run"
TPU_REQUIRED_FLAGS="name"
TPU_USAGE="usage: tpu/stop.sh --name NAME [--zone ZONE] [--project PROJECT] [--delete] [--dry-run]

Stops the TPU VM NAME, or with --delete deletes it (pod slices: --delete is the only way
to stop paying; what is on the workers' disks is lost, the runs in gs:// are not).

  --name NAME        TPU VM name
  --zone ZONE        its zone (default: gcloud's compute/zone)
  --project PROJECT  its project (default: gcloud's core/project)
  --delete           delete instead of stop (no confirmation prompt)
  --dry-run          print the gcloud command, run nothing"

tpu_parse_flags "$@"
tpu_require_gcloud
tpu_target_flags

if [[ -n $FLAG_delete ]]; then
  tpu_run gcloud compute tpus tpu-vm delete "$FLAG_name" ${TPU_TARGET[@]+"${TPU_TARGET[@]}"} --quiet
else
  tpu_run gcloud compute tpus tpu-vm stop "$FLAG_name" ${TPU_TARGET[@]+"${TPU_TARGET[@]}"} ||
    tpu_die "stopping $FLAG_name failed (see gcloud's message above); multi-host pod slices cannot be stopped: rerun with --delete"
fi
