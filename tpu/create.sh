#!/usr/bin/env bash
# Create a Cloud TPU VM (one host or a multi-host pod slice) with the runtime image JAX
# needs. See tpu/README.md for the whole create -> setup -> run -> stop walk-through.
# FLAG_* variables are assigned by tpu_parse_flags (printf -v), out of shellcheck's sight.
# shellcheck disable=SC2154
set -euo pipefail
here=${BASH_SOURCE[0]%/*}
[[ $here != "${BASH_SOURCE[0]}" ]] || here=. # run as `bash create.sh` from tpu/
# shellcheck source=tpu/lib.sh
source "$here/lib.sh"

TPU_VALUE_FLAGS="name type zone project version"
TPU_BOOL_FLAGS="spot dry-run"
TPU_REQUIRED_FLAGS="name type zone"
TPU_USAGE="usage: tpu/create.sh --name NAME --type TYPE --zone ZONE [--project PROJECT]
                      [--version RUNTIME] [--spot] [--dry-run]

Creates the TPU VM NAME (gcloud compute tpus tpu-vm create).

  --name NAME        TPU VM name, e.g. jx
  --type TYPE        accelerator type: v5e-32 (written v5litepod-32 for gcloud), v5p-64,
                     v6e-16, v4-32, ...; the number counts chips (v5e, v6e) or
                     TensorCores (v5p, v4) -- see tpu/README.md
  --zone ZONE        zone that has the type, e.g. us-west4-a for v5e
  --project PROJECT  Google Cloud project (default: gcloud's core/project)
  --version RUNTIME  TPU software version (default by type: v6e v2-alpha-tpuv6e,
                     v5p v2-alpha-tpuv5, v5e v2-alpha-tpuv5-lite, v4 and older
                     tpu-ubuntu2204-base; list: gcloud compute tpus tpu-vm versions list)
  --spot             Spot capacity: cheaper, may be preempted at any time
  --dry-run          print the gcloud command, run nothing"

tpu_parse_flags "$@"

# gcloud spells v5e slices v5litepod-N; accept both spellings.
accelerator=$FLAG_type
case $accelerator in
  v5e-*) accelerator="v5litepod-${accelerator#v5e-}" ;;
esac
case $accelerator in
  [a-z]*[0-9a-z]-[1-9]*) ;;
  *) tpu_die "--type '$FLAG_type' is not an accelerator type: expected GENERATION-SIZE such as v5e-32, v5p-64 or v6e-16" ;;
esac

version=$FLAG_version
if [[ -z $version ]]; then
  case $accelerator in
    v6e-*) version=v2-alpha-tpuv6e ;;
    v5p-*) version=v2-alpha-tpuv5 ;;
    v5litepod-*) version=v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) version=tpu-ubuntu2204-base ;;
    *) tpu_die "no default runtime for --type $FLAG_type: pass --version (list them with: gcloud compute tpus tpu-vm versions list --zone=$FLAG_zone)" ;;
  esac
fi

tpu_require_gcloud
tpu_target_flags
create=(gcloud compute tpus tpu-vm create "$FLAG_name" "${TPU_TARGET[@]}"
  "--accelerator-type=$accelerator" "--version=$version")
if [[ -n $FLAG_spot ]]; then create+=(--spot); fi
tpu_run "${create[@]}"
