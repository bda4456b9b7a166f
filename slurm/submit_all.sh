#!/bin/bash
# Submits the whole recipe to SLURM as chained jobs:
#
#   1. teachers        array, task K trains hparams/teachers/teaK.yaml
#   2. teacher store   array, task P writes the store part of teacher P
#                      (after every teacher: --dependency=afterok:<job 1>)
#   2b. unlabelled     optional (MTKD_UNLABELLED=SOURCE): one job, every
#                      teacher on audio without transcripts (the store's
#                      unlabelled part; after the store array)
#   3. merge           optional (MTKD_MERGE=1): the parts into one file
#   4. student         train_kd.py on MTKD_KD_GPUS GPUs (torchrun when > 1),
#                      with --unlabelled SOURCE when set
#
#   MTKD_DATA=/path/to/TIMIT slurm/submit_all.sh [--dry-run] [NAME=VALUE ...]
#
# Settings come from MTKD_* environment variables or NAME=VALUE arguments
# (list: --help). They are written to $MTKD_OUT/slurm_settings.sh, which every
# job reads (also after a requeue). --dry-run prints the settings and the
# sbatch commands, with made-up job ids so the dependencies show, and submits
# and writes nothing. Submitting again is safe: finished teachers, store parts
# and students are skipped by the jobs themselves. A job that fails writes a
# line to $MTKD_OUT/failed.txt (job, array task, log); the jobs after it are
# cancelled (--kill-on-invalid-dep=yes).
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: MTKD_DATA=/path/to/TIMIT slurm/submit_all.sh [--dry-run] [NAME=VALUE ...]

Variables (environment or NAME=VALUE arguments; default in brackets):
  MTKD_DATA            TIMIT folder (required)
  MTKD_OUT             output root [$PWD/results/slurm]
  MTKD_REPO            this recipe's folder [the folder above slurm/]
  MTKD_ENV_SETUP       shell code run in each job to set up Python
                       [source "$MTKD_REPO/.venv/bin/activate"]
  MTKD_PYTHON          Python command after MTKD_ENV_SETUP [python]
  MTKD_PARTITION       --partition [none: the site default]
  MTKD_ACCOUNT         --account [none]
  MTKD_QOS             --qos [none]
  MTKD_SBATCH_ARGS     more sbatch options for every job [none]
  MTKD_GPU_OPTION      how to ask for N GPUs, {} is N [--gres=gpu:{}]
  MTKD_CPUS            CPU cores per GPU (per job without GPU) [8]
  MTKD_MEM             memory per job [32G]
  MTKD_TEACHERS        teacher numbers, an array spec: 0-9, 0,3,5-7 [0-9]
  MTKD_ARRAY_LIMIT     at most this many array tasks at once [no limit]
  MTKD_TEACHER_GPUS    GPUs per teacher, torchrun when > 1, 0: CPU [1]
  MTKD_STORE_GPUS      GPUs per store task (and the unlabelled job), 0 or 1 [1]
  MTKD_KD_GPUS         GPUs for the student, torchrun when > 1, 0: CPU [1]
  MTKD_TEACHER_TIME    time limit per teacher task [12:00:00]
  MTKD_STORE_TIME      time limit per store task (and the unlabelled job)
                       [02:00:00]
  MTKD_MERGE_TIME      time limit of the merge job [02:00:00]
  MTKD_KD_TIME         time limit of the student job [12:00:00]
  MTKD_PRECISION       training precision: fp32, fp16, bf16 [fp32]
  MTKD_EVAL_PRECISION  valid/test/store precision: fp32, fp16, bf16 [fp32]
  MTKD_STRATEGY        average, best or weighted [weighted]
  MTKD_PRETRAIN_TEACHER  list position of the teacher whose encoder starts
                       the student, or none [0]
  MTKD_MERGE           1: merge the store parts into one file first [0]
  MTKD_UNLABELLED      audio without transcripts for the student too: timit_sa,
                       a folder of audio or a manifest (docs/stages.md); adds
                       one job after the store array writing the store's
                       unlabelled part with every teacher, and the student
                       gets --unlabelled and reads the store folder (also with
                       MTKD_MERGE=1: the merged file holds the labelled
                       splits only; the merge still runs, not waited for)
                       [none]
  MTKD_TEACHER_ARGS    more options for train_teacher.py [none]
  MTKD_STORE_ARGS      more options for save_teachers.py [none]
  MTKD_KD_ARGS         more options for train_kd.py [none]
  MTKD_STOP_GRACE      seconds a stage gets to checkpoint after SIGUSR1 [90]
  MTKD_MAX_REQUEUES    a job requeues itself at most this often [20]
USAGE
}

DRY_RUN=0
for arg in "$@"; do
    case $arg in
    --dry-run) DRY_RUN=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    MTKD_*=*) export "${arg?}" ;;
    *)
        echo "submit_all.sh: unknown argument '$arg' (see --help)" >&2
        exit 2
        ;;
    esac
done

die() {
    echo "submit_all.sh: $*" >&2
    exit 2
}

abspath() {
    if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi
}

# Expands an array spec (0-9, 0,3,5-7) to "0 1 2 ...".
expand_ids() {
    local part parts ids=()
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            ids+=($(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"))
        elif [[ $part =~ ^[0-9]+$ ]]; then
            ids+=("$part")
        else
            die "MTKD_TEACHERS: '$part' is not N or N-M (e.g. 0-9 or 0,3,5-7)"
        fi
    done
    echo "${ids[*]}"
}

# ------------------------------------------------------------- the settings
[[ -n ${MTKD_DATA:-} ]] || die "set MTKD_DATA to the TIMIT folder (see --help)"
MTKD_DATA=$(abspath "$MTKD_DATA")
MTKD_REPO=$(abspath "${MTKD_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}")
MTKD_OUT=$(abspath "${MTKD_OUT:-results/slurm}")
: "${MTKD_ENV_SETUP:=source \"\$MTKD_REPO/.venv/bin/activate\"}"
: "${MTKD_PYTHON:=python}"
: "${MTKD_PARTITION:=}" "${MTKD_ACCOUNT:=}" "${MTKD_QOS:=}" "${MTKD_SBATCH_ARGS:=}"
if [[ -z ${MTKD_GPU_OPTION:-} ]]; then MTKD_GPU_OPTION='--gres=gpu:{}'; fi
: "${MTKD_CPUS:=8}" "${MTKD_MEM:=32G}"
: "${MTKD_TEACHERS:=0-9}" "${MTKD_ARRAY_LIMIT:=}"
: "${MTKD_TEACHER_GPUS:=1}" "${MTKD_STORE_GPUS:=1}" "${MTKD_KD_GPUS:=1}"
: "${MTKD_TEACHER_TIME:=12:00:00}" "${MTKD_STORE_TIME:=02:00:00}"
: "${MTKD_MERGE_TIME:=02:00:00}" "${MTKD_KD_TIME:=12:00:00}"
: "${MTKD_PRECISION:=fp32}" "${MTKD_EVAL_PRECISION:=fp32}"
: "${MTKD_STRATEGY:=weighted}" "${MTKD_PRETRAIN_TEACHER:=0}" "${MTKD_MERGE:=0}"
: "${MTKD_TEACHER_ARGS:=}" "${MTKD_STORE_ARGS:=}" "${MTKD_KD_ARGS:=}"
: "${MTKD_STOP_GRACE:=90}" "${MTKD_MAX_REQUEUES:=20}" "${MTKD_UNLABELLED:=}"

for name in MTKD_PRECISION MTKD_EVAL_PRECISION; do
    [[ ${!name} =~ ^(fp32|fp16|bf16)$ ]] || die "$name must be fp32, fp16 or bf16"
done
[[ $MTKD_STRATEGY =~ ^(average|best|weighted)$ ]] ||
    die "MTKD_STRATEGY must be average, best or weighted"
for name in MTKD_TEACHER_GPUS MTKD_STORE_GPUS MTKD_KD_GPUS MTKD_CPUS MTKD_MERGE \
    MTKD_STOP_GRACE MTKD_MAX_REQUEUES; do
    [[ ${!name} =~ ^[0-9]+$ ]] || die "$name must be a whole number, got '${!name}'"
done
((MTKD_STORE_GPUS <= 1)) || die "MTKD_STORE_GPUS must be 0 or 1 (one teacher per task)"
MTKD_TEACHER_IDS=$(expand_ids "$MTKD_TEACHERS")
read -ra teacher_ids <<<"$MTKD_TEACHER_IDS"
((${#teacher_ids[@]} > 0)) || die "MTKD_TEACHERS lists no teacher"
for k in "${teacher_ids[@]}"; do
    [[ -f $MTKD_REPO/hparams/teachers/tea$k.yaml ]] ||
        die "no hparams/teachers/tea$k.yaml in $MTKD_REPO (MTKD_TEACHERS=$MTKD_TEACHERS)"
done
n_teachers=${#teacher_ids[@]}
if [[ $MTKD_PRETRAIN_TEACHER != none ]]; then
    [[ $MTKD_PRETRAIN_TEACHER =~ ^[0-9]+$ ]] && ((MTKD_PRETRAIN_TEACHER < n_teachers)) ||
        die "MTKD_PRETRAIN_TEACHER must be none or a list position 0..$((n_teachers - 1))"
fi
# MTKD_UNLABELLED: timit_sa, or a folder / manifest checked now (the jobs that
# read it start only after the teachers and the store).
if [[ $MTKD_UNLABELLED == none ]]; then MTKD_UNLABELLED=""; fi
if [[ -n $MTKD_UNLABELLED && $MTKD_UNLABELLED != timit_sa ]]; then
    MTKD_UNLABELLED=$(abspath "$MTKD_UNLABELLED")
    [[ -d $MTKD_UNLABELLED || ($MTKD_UNLABELLED == *.json && -f $MTKD_UNLABELLED) ]] ||
        die "MTKD_UNLABELLED must be timit_sa, a folder of audio or a .json manifest; '$MTKD_UNLABELLED' is none of them"
fi

# Where things go (derived).
MTKD_STORE=$MTKD_OUT/teacher_store
MTKD_MERGED=$MTKD_OUT/teacher_store_merged.h5
MTKD_TEACHER_LIST=$MTKD_OUT/teachers.txt
MTKD_KD_OUT=$MTKD_OUT/student_$MTKD_STRATEGY
# The store's unlabelled part (mtkd/store/format.py, unlabelled_part_path):
# unlabelled-t000.h5 for one teacher, unlabelled-t000-tNNN.h5 for N + 1.
MTKD_UNLABELLED_PART=""
if [[ -n $MTKD_UNLABELLED ]]; then
    MTKD_UNLABELLED_PART=$MTKD_STORE/unlabelled-t000.h5
    if ((n_teachers > 1)); then
        MTKD_UNLABELLED_PART=$(printf '%s/unlabelled-t000-t%03d.h5' "$MTKD_STORE" $((n_teachers - 1)))
    fi
fi
# The store the student reads: the merged file with MTKD_MERGE=1, except with
# unlabelled audio, which only the folder has.
MTKD_KD_STORE=$MTKD_STORE
if ((MTKD_MERGE)) && [[ -z $MTKD_UNLABELLED ]]; then MTKD_KD_STORE=$MTKD_MERGED; fi
SETTINGS=$MTKD_OUT/slurm_settings.sh
LOGS=$MTKD_OUT/logs

settings_text() {
    echo "# Written by slurm/submit_all.sh on $(date '+%F %T'); read by every job."
    local name
    for name in MTKD_DATA MTKD_OUT MTKD_REPO MTKD_ENV_SETUP MTKD_PYTHON \
        MTKD_TEACHER_IDS MTKD_TEACHER_GPUS MTKD_STORE_GPUS MTKD_KD_GPUS \
        MTKD_PRECISION MTKD_EVAL_PRECISION MTKD_STRATEGY MTKD_PRETRAIN_TEACHER \
        MTKD_MERGE MTKD_TEACHER_ARGS MTKD_STORE_ARGS MTKD_KD_ARGS \
        MTKD_STOP_GRACE MTKD_MAX_REQUEUES MTKD_UNLABELLED MTKD_STORE MTKD_MERGED \
        MTKD_UNLABELLED_PART MTKD_KD_STORE MTKD_TEACHER_LIST MTKD_KD_OUT; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done
}

# ------------------------------------------------------------- submitting
# Options of every job, then per-job resources.
common=(--parsable --kill-on-invalid-dep=yes)
[[ -n $MTKD_PARTITION ]] && common+=("--partition=$MTKD_PARTITION")
[[ -n $MTKD_ACCOUNT ]] && common+=("--account=$MTKD_ACCOUNT")
[[ -n $MTKD_QOS ]] && common+=("--qos=$MTKD_QOS")
read -ra site_args <<<"$MTKD_SBATCH_ARGS"
common+=("${site_args[@]}")

# resources GPUS TIME: fills the array RES.
resources() {
    local gpus=$1 cpus=$MTKD_CPUS
    RES=("--time=$2" "--mem=$MTKD_MEM" --ntasks=1)
    if ((gpus > 0)); then
        RES+=("${MTKD_GPU_OPTION//\{\}/$gpus}")
        cpus=$((MTKD_CPUS * gpus))
    fi
    RES+=("--cpus-per-task=$cpus")
}

array_spec() {
    if [[ -n $MTKD_ARRAY_LIMIT ]]; then echo "$1%$MTKD_ARRAY_LIMIT"; else echo "$1"; fi
}

# Prints a command as it would be typed (quotes only where the shell needs them).
print_cmd() {
    local word out=()
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            out+=("$word")
        else
            out+=("$(printf '%q' "$word")")
        fi
    done
    echo "${out[*]}"
}

FAKE_ID=1000
SUBMITTED=()
# submit VAR SBATCH_ARGS...: submits, sets VAR to the job id.
submit() {
    local var=$1 id
    shift
    local cmd=(sbatch "${common[@]}" "$@")
    if ((DRY_RUN)); then
        FAKE_ID=$((FAKE_ID + 1))
        id=$FAKE_ID
        print_cmd "${cmd[@]}"
        echo "#   -> job $id (dry run)"
    else
        if ! id=$("${cmd[@]}"); then
            echo "submit_all.sh: sbatch refused the job above ($(print_cmd "${cmd[@]}"))" >&2
            if ((${#SUBMITTED[@]})); then
                echo "submit_all.sh: already submitted: ${SUBMITTED[*]} (cancel them: scancel ${SUBMITTED[*]})" >&2
            fi
            exit 1
        fi
        id=${id%%;*} # --parsable prints ID or ID;CLUSTER
        SUBMITTED+=("$id")
        echo "submitted job $id: $(print_cmd "${cmd[@]}")"
    fi
    printf -v "$var" '%s' "$id"
}

if ((DRY_RUN)); then
    echo "# Dry run: nothing is submitted or written."
    echo "# Settings file $SETTINGS:"
    settings_text | sed 's/^/#   /'
else
    mkdir -p "$MTKD_OUT" "$LOGS"
    settings_text >"$SETTINGS.tmp"
    mv "$SETTINGS.tmp" "$SETTINGS"
    echo "settings: $SETTINGS"
    if [[ -e $MTKD_OUT/failed.txt ]]; then
        earlier=$LOGS/failed-$(date '+%Y%m%d-%H%M%S').txt
        mv "$MTKD_OUT/failed.txt" "$earlier"
        echo "earlier failures (moved to $earlier):"
        sed 's/^/  /' "$earlier"
    fi
fi

slurm=$MTKD_REPO/slurm
echo "# Stage 1: teachers $MTKD_TEACHERS (one array task each)"
resources "$MTKD_TEACHER_GPUS" "$MTKD_TEACHER_TIME"
submit teachers_job --job-name=mtkd-teacher "--array=$(array_spec "$MTKD_TEACHERS")" \
    "${RES[@]}" "--output=$LOGS/%x-%A_%a.out" "$slurm/teacher.sbatch" "$SETTINGS"

echo "# Stage 2: teacher store, one part per teacher (list positions 0-$((n_teachers - 1)))"
resources "$MTKD_STORE_GPUS" "$MTKD_STORE_TIME"
submit store_job --job-name=mtkd-store "--array=$(array_spec "0-$((n_teachers - 1))")" \
    "--dependency=afterok:$teachers_job" "${RES[@]}" "--output=$LOGS/%x-%A_%a.out" \
    "$slurm/save_teachers.sbatch" "$SETTINGS"
last_job=$store_job

merge_stage=2b
if [[ -n $MTKD_UNLABELLED ]]; then
    # One job, no array: the consensus needs every teacher in one run; the
    # labelled parts of the array are reused.
    echo "# Stage 2b: the store's unlabelled part from $MTKD_UNLABELLED (every teacher in one job)"
    resources "$MTKD_STORE_GPUS" "$MTKD_STORE_TIME"
    submit unlabelled_job --job-name=mtkd-unlabelled "--dependency=afterok:$store_job" \
        "${RES[@]}" "--output=$LOGS/%x-%j.out" "$slurm/unlabelled_store.sbatch" "$SETTINGS"
    last_job=$unlabelled_job
    merge_stage=2c
fi

if ((MTKD_MERGE)); then
    echo "# Stage $merge_stage: merge the store parts into $MTKD_MERGED"
    resources 0 "$MTKD_MERGE_TIME"
    submit merge_job --job-name=mtkd-merge "--dependency=afterok:$last_job" \
        "${RES[@]}" "--output=$LOGS/%x-%j.out" "$slurm/merge_store.sbatch" "$SETTINGS"
    if [[ -n $MTKD_UNLABELLED ]]; then
        # The student reads the store folder (the merged file holds the labelled
        # splits only, not the unlabelled part): it does not wait for the merge,
        # which still runs for whoever wants the file.
        echo "# (the student reads the store folder $MTKD_STORE, not the merged file, which lacks the unlabelled part: it does not wait for the merge)"
    else
        last_job=$merge_job
    fi
fi

echo "# Stage 3: student ($MTKD_STRATEGY) on $MTKD_KD_GPUS GPU(s)${MTKD_UNLABELLED:+ on train + $MTKD_UNLABELLED (--unlabelled), store $MTKD_KD_STORE}"
resources "$MTKD_KD_GPUS" "$MTKD_KD_TIME"
submit kd_job --job-name=mtkd-kd "--dependency=afterok:$last_job" "${RES[@]}" \
    "--output=$LOGS/%x-%j.out" "$slurm/train_kd.sbatch" "$SETTINGS"

echo "# Student results will be in $MTKD_KD_OUT (logs: $LOGS)"
echo "# A job that fails writes a line to $MTKD_OUT/failed.txt (which task, its log);"
echo "# the jobs after it are then cancelled (DependencyNeverSatisfied)."
