# shellcheck shell=bash
# FLAG_* are assigned indirectly (printf -v) and the TPU_* settings are read by the
# scripts that source this file, which shellcheck cannot see from here:
# shellcheck disable=SC2034,SC2154
# Shared by tpu/create.sh, setup.sh, run.sh and stop.sh (sourced, never run): flag
# parsing, --dry-run, shell quoting and error messages. Written for bash >= 3.2 (the
# bash macOS ships), so no associative arrays, mapfile or ${var,,}.
#
# A script declares its flags, then calls tpu_parse_flags "$@":
#   TPU_VALUE_FLAGS="name zone project"   # flags that take a value (--name jx or --name=jx)
#   TPU_BOOL_FLAGS="dry-run"              # switches (no value)
#   TPU_REQUIRED_FLAGS="name zone"        # value flags that must be given
#   TPU_TAKES_COMMAND=1                   # optional: words after `--` go to TPU_COMMAND
#   TPU_USAGE="..."                       # printed by --help
# Each flag lands in a variable named FLAG_<flag with - as _>: FLAG_name, FLAG_dry_run
# (booleans are 1 or empty).

# Where the scripts put jaxir on every TPU worker (relative to the login user's $HOME;
# kept as literal `$HOME` so the remote shell expands it).
# shellcheck disable=SC2016  # `$HOME` is expanded by the worker's shell, not here
TPU_REMOTE_SRC='$HOME/jaxir'
# shellcheck disable=SC2016
TPU_REMOTE_VENV='$HOME/jaxir-venv'

TPU_SCRIPT="tpu/${0##*/}"

# tpu_die MESSAGE...: print "tpu/<script>: error: MESSAGE" on stderr and exit 2.
tpu_die() {
  printf '%s: error: %s\n' "$TPU_SCRIPT" "$*" >&2
  exit 2
}

# tpu_quote WORD...: the words as one line a POSIX shell reads back as the same words
# (safe words bare, the rest in single quotes with ' written as '\'').
tpu_quote() {
  local word out="" sep="" squote="'\\''"
  for word in "$@"; do
    if [[ -n $word && $word != *[!A-Za-z0-9_./:=@%+,-]* ]]; then
      out+="$sep$word"
    else
      out+="$sep'${word//\'/$squote}'"
    fi
    sep=" "
  done
  printf '%s' "$out"
}

# tpu_in_list WORD "LIST OF WORDS": true when WORD is one of the space-separated words.
tpu_in_list() {
  case " $2 " in *" $1 "*) return 0 ;; *) return 1 ;; esac
}

# tpu_flags_hint: "--a, --b, ..." for error messages.
tpu_flags_hint() {
  local flag out=""
  for flag in $TPU_VALUE_FLAGS $TPU_BOOL_FLAGS; do
    out+="${out:+, }--$flag"
  done
  printf '%s' "$out"
}

# tpu_parse_flags "$@": fills FLAG_* (and TPU_COMMAND) or exits with an error naming the
# flag and what was expected.
tpu_parse_flags() {
  local flag arg var
  TPU_COMMAND=()
  for flag in $TPU_VALUE_FLAGS $TPU_BOOL_FLAGS; do
    printf -v "FLAG_${flag//-/_}" '%s' ""
  done
  while (($# > 0)); do
    arg=$1
    shift
    case $arg in
      -h | --help)
        printf '%s\n' "$TPU_USAGE"
        exit 0
        ;;
      --)
        [[ -n ${TPU_TAKES_COMMAND:-} ]] ||
          tpu_die "unexpected '--': this script runs no command of yours (flags: $(tpu_flags_hint))"
        TPU_COMMAND=("$@")
        break
        ;;
      --*=*)
        flag=${arg%%=*}
        flag=${flag#--}
        tpu_in_list "$flag" "$TPU_VALUE_FLAGS" ||
          tpu_die "unknown flag ${arg%%=*} (flags that take a value: $TPU_VALUE_FLAGS; see $TPU_SCRIPT --help)"
        printf -v "FLAG_${flag//-/_}" '%s' "${arg#*=}"
        ;;
      --*)
        flag=${arg#--}
        var="FLAG_${flag//-/_}"
        if tpu_in_list "$flag" "$TPU_BOOL_FLAGS"; then
          printf -v "$var" '%s' 1
        elif tpu_in_list "$flag" "$TPU_VALUE_FLAGS"; then
          (($# > 0)) && [[ $1 != --* ]] || tpu_die "flag --$flag needs a value, e.g. --$flag VALUE"
          printf -v "$var" '%s' "$1"
          shift
        else
          tpu_die "unknown flag $arg (expected one of: $(tpu_flags_hint); see $TPU_SCRIPT --help)"
        fi
        ;;
      *)
        if [[ -n ${TPU_TAKES_COMMAND:-} ]]; then
          tpu_die "unexpected argument '$arg': put the command to run after '--', e.g. $TPU_SCRIPT --name jx -- jaxir --help"
        fi
        tpu_die "unexpected argument '$arg' (flags: $(tpu_flags_hint); see $TPU_SCRIPT --help)"
        ;;
    esac
  done
  for flag in ${TPU_REQUIRED_FLAGS:-}; do
    var="FLAG_${flag//-/_}"
    [[ -n ${!var} ]] || tpu_die "missing required flag --$flag (see $TPU_SCRIPT --help)"
  done
}

# tpu_require_gcloud: unless --dry-run, fail early with the install steps when the
# Google Cloud CLI is not on PATH.
tpu_require_gcloud() {
  [[ -n ${FLAG_dry_run:-} ]] && return 0
  command -v gcloud >/dev/null 2>&1 ||
    tpu_die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then run 'gcloud auth login' and 'gcloud config set project PROJECT'; or add --dry-run to only print the commands"
}

# tpu_run CMD ARG...: with --dry-run print the command (quoted, one line) and run nothing;
# otherwise echo it on stderr as "+ command" and run it.
tpu_run() {
  if [[ -n ${FLAG_dry_run:-} ]]; then
    printf '%s\n' "$(tpu_quote "$@")"
    return 0
  fi
  printf '+ %s\n' "$(tpu_quote "$@")" >&2
  "$@"
}

# tpu_target_flags: the --zone / --project flags every gcloud tpu-vm call gets, into the
# array TPU_TARGET (unset flags fall back to gcloud's compute/zone and core/project).
tpu_target_flags() {
  TPU_TARGET=()
  if [[ -n ${FLAG_zone:-} ]]; then TPU_TARGET+=("--zone=$FLAG_zone"); fi
  if [[ -n ${FLAG_project:-} ]]; then TPU_TARGET+=("--project=$FLAG_project"); fi
}

# tpu_ssh_all REMOTE_COMMAND: run one shell command line on every worker of the TPU VM
# named by --name, concurrently (one process per host).
tpu_ssh_all() {
  tpu_target_flags
  tpu_run gcloud compute tpus tpu-vm ssh "$FLAG_name" ${TPU_TARGET[@]+"${TPU_TARGET[@]}"} \
    --worker=all --command="$1"
}
