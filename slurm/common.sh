# Sourced by the sbatch scripts (after the settings file that submit_all.sh
# wrote): environment activation, the launcher, and the requeue wrapper.
#
# Pre-emption and time limits: the jobs ask for `--signal=B:USR1@120` and
# `--requeue`. `run_requeueable` runs the stage in the background and, when
# the batch shell gets SIGUSR1 (time limit in 120 s) or SIGTERM (pre-emption),
# passes SIGUSR1 on to the training processes: they save an intra-epoch
# checkpoint at the next batch and exit with status 75 (mtkd/cluster.py).
# The job then requeues itself (`scontrol requeue $SLURM_JOB_ID`) and the
# requeued job runs the same command, which resumes from that checkpoint.
# A stage whose completion marker exists is never run again.
#
# What the real scheduler does (seen on a one-node cluster, slurm 22.05):
# `scancel JOB`, `scontrol requeue JOB`, the time limit and a pre-emption
# without grace time all send SIGTERM to every process of the job, and inside
# the job they look alike (JobState=COMPLETING), except that `scontrol
# requeue` raises the restart count at once and slurmstepd writes the cause
# to the job's log ("*** JOB 12 ON node CANCELLED AT ... DUE TO TIME LIMIT
# ***"; nothing after the time for a plain scancel). So before requeueing
# itself after a SIGTERM a job asks SLURM: already requeued -> it just stops;
# cancelled by scancel -> it stops and stays cancelled (otherwise `scancel`
# could never stop a job); otherwise (a pre-emption, the time limit) ->
# `scontrol requeue`, as after SIGUSR1.
#
# A job that fails (any non-zero exit that is no requeue) appends one line to
# $MTKD_OUT/failed.txt: which job and array task, its status and its log. The
# jobs after it are cancelled by SLURM (--kill-on-invalid-dep=yes).

MTKD_REQUEUE_EXIT=75

mtkd_log() {
    echo "[mtkd $(date '+%F %T')] $*" >&2
}

# Exits 0 at once when the stage's completion marker exists.
mtkd_skip_if_done() {
    if [[ -e $1 ]]; then
        mtkd_log "already complete ($1 exists): nothing to do"
        exit 0
    fi
}

# Goes to the recipe folder and activates the Python environment.
mtkd_activate() {
    cd "$MTKD_REPO" || exit 1
    set +u # activate scripts and `module load` often read unset variables
    eval "$MTKD_ENV_SETUP"
    set -u
}

# Fills the array MTKD_LAUNCH with the command that starts a stage on $1 GPUs:
# python (0 or 1 GPU) or torchrun on this node (2 or more, one rank per GPU).
mtkd_launcher() {
    local gpus=$1
    if ((gpus > 1)); then
        MTKD_LAUNCH=("$MTKD_PYTHON" -m torch.distributed.run --standalone
            "--nproc_per_node=$gpus")
        MTKD_TORCHRUN=1
    else
        MTKD_LAUNCH=("$MTKD_PYTHON")
        MTKD_TORCHRUN=0
    fi
}

# Options every stage gets: device and precisions.
mtkd_common_args() {
    local gpus=$1
    MTKD_ARGS=(--precision "$MTKD_PRECISION" --eval_precision "$MTKD_EVAL_PRECISION")
    if ((gpus == 0)); then
        MTKD_ARGS+=(--device cpu)
    fi
}

_mtkd_on_signal() {
    _mtkd_signal=$1
    if ((_mtkd_deadline == 0)); then
        _mtkd_deadline=$((SECONDS + MTKD_STOP_GRACE))
    fi
    mtkd_log "SIG$1: asking the stage to checkpoint and stop (grace ${MTKD_STOP_GRACE} s)"
    local targets=("$_mtkd_child")
    if ((MTKD_TORCHRUN)); then
        # torchrun ignores SIGUSR1 (see below): its workers get it instead.
        targets+=($(pgrep -P "$_mtkd_child" 2>/dev/null || true))
    fi
    kill -USR1 "${targets[@]}" 2>/dev/null || true
}

# Sets _mtkd_job_state, _mtkd_job_restarts and _mtkd_job_log from `scontrol
# show job` (empty when SLURM does not answer).
_mtkd_job_info() {
    local info
    info=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null || true)
    _mtkd_job_state=$(grep -o 'JobState=[A-Z_]*' <<<"$info" | head -n 1 | cut -d= -f2)
    _mtkd_job_restarts=$(grep -o 'Restarts=[0-9]*' <<<"$info" | head -n 1 | cut -d= -f2)
    _mtkd_job_log=$(grep -o 'StdOut=[^ ]*' <<<"$info" | head -n 1 | cut -d= -f2-)
}

# Why SLURM is ending this job, from slurmstepd's line in the job's log:
# "scancel" (no cause given), "TIME LIMIT", "PREEMPTION", ...; empty if none.
_mtkd_end_cause() {
    local line
    [[ -n $_mtkd_job_log && -r $_mtkd_job_log ]] || return 0
    line=$(grep -a "\*\*\* JOB $SLURM_JOB_ID ON .* CANCELLED AT " "$_mtkd_job_log" |
        tail -n 1 || true)
    [[ -n $line ]] || return 0
    if [[ $line == *" DUE TO "* ]]; then
        line=${line##* DUE TO }
        echo "${line% \*\*\*}"
    else
        echo scancel
    fi
}

_mtkd_requeue() {
    local restarts=${SLURM_RESTART_COUNT:-0}
    if [[ -z ${SLURM_JOB_ID:-} ]]; then
        mtkd_log "not in a SLURM job: run the same command again to resume"
        exit "$MTKD_REQUEUE_EXIT"
    fi
    if [[ ${_mtkd_signal:-} == TERM ]]; then
        # SIGTERM: SLURM may be ending the job itself (see the top).
        _mtkd_job_info
        if [[ -n $_mtkd_job_restarts ]] && ((_mtkd_job_restarts > restarts)); then
            # `scontrol requeue` from outside, or a pre-emption that requeues.
            mtkd_log "SLURM is requeueing job $SLURM_JOB_ID already (restart $_mtkd_job_restarts): stopping"
            _mtkd_exit_quietly=1
            exit 0
        fi
        if [[ -n $_mtkd_job_state && $_mtkd_job_state != RUNNING ]] &&
            [[ $(_mtkd_end_cause) == scancel ]]; then
            mtkd_log "job $SLURM_JOB_ID was cancelled (scancel): not requeueing; its last checkpoint is kept, submitting again resumes it"
            _mtkd_exit_quietly=1
            exit 143
        fi
    fi
    if ((restarts >= MTKD_MAX_REQUEUES)); then
        mtkd_log "requeued $restarts times already (MTKD_MAX_REQUEUES): giving up"
        exit 1
    fi
    mtkd_log "requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
    if ! scontrol requeue "$SLURM_JOB_ID"; then
        mtkd_log "scontrol requeue $SLURM_JOB_ID failed (is requeueing allowed here?)"
        exit 1
    fi
    _mtkd_exit_quietly=1
    exit 0
}

# EXIT trap of the jobs: a failure (non-zero status, no requeue) is written to
# $MTKD_OUT/failed.txt with the job's log, and said in the log.
_mtkd_on_exit() {
    local rc=$?
    if ((rc == 0)) || ((${_mtkd_exit_quietly:-0})) || [[ -z ${SLURM_JOB_ID:-} ]]; then
        return 0
    fi
    local job=$SLURM_JOB_ID log="" what
    if [[ -n ${SLURM_ARRAY_JOB_ID:-} ]]; then
        job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
    fi
    _mtkd_job_info
    log=$_mtkd_job_log
    what="job $job (${SLURM_JOB_NAME:-?}${SLURM_ARRAY_TASK_ID:+, array task $SLURM_ARRAY_TASK_ID}) failed with status $rc: log ${log:-in ${MTKD_OUT:-?}/logs}"
    mtkd_log "$what"
    mtkd_log "the jobs that wait for it (afterok) are cancelled: fix the cause, then run slurm/submit_all.sh again (finished work is skipped)"
    if [[ -n ${MTKD_OUT:-} && -d $MTKD_OUT ]]; then
        echo "$(date '+%F %T') $what" >>"$MTKD_OUT/failed.txt" || true
    fi
    return 0
}
if [[ -n ${SLURM_JOB_ID:-} ]]; then
    trap _mtkd_on_exit EXIT
fi

# run_requeueable MARKER COMMAND...: runs COMMAND; requeues the job when it
# stopped for a signal (status 75, or a signal reached this shell) before
# writing MARKER; otherwise returns COMMAND's status.
run_requeueable() {
    local marker=$1
    shift
    local stop_file rc
    stop_file=$(mktemp "${TMPDIR:-/tmp}/mtkd-stop.XXXXXX")
    rm -f "$stop_file"
    _mtkd_signal=""
    _mtkd_deadline=0
    trap '_mtkd_on_signal USR1' USR1
    trap '_mtkd_on_signal TERM' TERM
    mtkd_log "running: $*"
    # SIGUSR1 ignored in the child: torchrun would die of it; Python stages
    # install their own handler (mtkd.cluster), which replaces the ignore.
    (
        trap '' USR1
        export MTKD_REQUEUE_FILE=$stop_file
        exec "$@"
    ) &
    _mtkd_child=$!
    while :; do
        rc=0
        wait "$_mtkd_child" || rc=$?
        if ! kill -0 "$_mtkd_child" 2>/dev/null; then
            break # it ended (rc is its status)
        fi
        # A trapped signal interrupted `wait`: give the stage time to stop.
        while kill -0 "$_mtkd_child" 2>/dev/null && ((SECONDS < _mtkd_deadline)); do
            sleep 1
        done
        if kill -0 "$_mtkd_child" 2>/dev/null; then
            mtkd_log "the stage did not stop within ${MTKD_STOP_GRACE} s"
            _mtkd_requeue # its last complete checkpoint is kept
        fi
    done
    trap - USR1 TERM
    local asked=0
    [[ -e $stop_file ]] && asked=1
    rm -f "$stop_file"
    if [[ -e $marker ]]; then
        mtkd_log "complete: $marker (status $rc)"
        return "$rc"
    fi
    if ((rc == MTKD_REQUEUE_EXIT || asked)) || [[ -n $_mtkd_signal ]]; then
        mtkd_log "stopped early (status $rc, signal ${_mtkd_signal:-none})"
        _mtkd_requeue
    fi
    mtkd_log "failed with status $rc"
    return "$rc"
}
