#!/bin/bash
# A one-node SLURM cluster on this machine, to try slurm/submit_all.sh and the
# sbatch scripts for real (tests/test_slurm_cluster.py uses it): munged,
# slurmctld and slurmd run as root, and everything they need or write (the
# slurm.conf, the munge key and socket, spool and state folders, logs, pid
# files) is in ONE folder. Nothing in /etc is read or changed: the SLURM
# commands find this cluster through SLURM_CONF.
#
#   slurm/local_cluster.sh start    write the configuration, start the daemons,
#                                   wait until the node is idle
#   slurm/local_cluster.sh status   are the daemons up, and is the node idle?
#   slurm/local_cluster.sh stop     cancel its jobs, stop the daemons
#   slurm/local_cluster.sh env      prints: export SLURM_CONF=<folder>/slurm.conf
#
#   eval "$(slurm/local_cluster.sh env)"; sinfo; squeue
#
# Settings (environment):
#   MTKD_SLURM_DIR      the folder [/tmp/mtkd-slurm]
#   MTKD_SLURM_PORT     slurmctld's port; slurmd uses the next one [6817]
#   MTKD_SLURM_TIMEOUT  seconds `start` waits for the node to be idle [60]
#   MTKD_SLURM_SBIN     where to look for the daemons besides PATH
#                       [/usr/sbin:/sbin]
#
# Needs the Debian/Ubuntu packages slurm-wlm and munge, and root. The node is
# this machine (its short hostname, `nproc` CPUs, MemTotal of /proc/meminfo)
# in one partition, `local`; no cgroups (proctrack/linuxproc, task/none), no
# systemd, no accounting database (finished jobs stay visible to
# `scontrol show job` for an hour, MinJobAge), requeueing allowed.
#
# Exit status: 0 done (status: all up and the node idle or busy), 1 failed
# or (status) not running, 2 bad usage, 3 packages missing, 4 not root.
set -euo pipefail

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | grep '^#' | sed 's/^# \{0,1\}//'
}

DIR=${MTKD_SLURM_DIR:-/tmp/mtkd-slurm}
[[ $DIR == /* ]] || DIR=$PWD/$DIR
PORT=${MTKD_SLURM_PORT:-6817}
TIMEOUT=${MTKD_SLURM_TIMEOUT:-60}
CONF=$DIR/slurm.conf
MUNGE_DIR=$DIR/munge
SOCKET=$MUNGE_DIR/munge.socket
KEY=$MUNGE_DIR/munge.key
RUN=$DIR/run
LOG=$DIR/log
NODE=$(hostname -s)
export SLURM_CONF=$CONF

say() { echo "local_cluster: $*"; }
die() {
    local status=$1
    shift
    echo "local_cluster: $*" >&2
    exit "$status"
}

if ! [[ $PORT =~ ^[1-9][0-9]{0,4}$ ]] || ((PORT > 65534)); then
    die 2 "MTKD_SLURM_PORT must be a port number (1-65534), got '$PORT'"
fi
[[ $TIMEOUT =~ ^(0|[1-9][0-9]*)$ ]] || die 2 "MTKD_SLURM_TIMEOUT must be seconds, got '$TIMEOUT'"

# Every program needed, with the Debian package that has it.
check_packages() {
    local missing=() packages=() program package
    for program in munged:munge mungekey:munge munge:munge slurmctld:slurm-wlm \
        slurmd:slurm-wlm sinfo:slurm-wlm scontrol:slurm-wlm squeue:slurm-wlm \
        sbatch:slurm-wlm scancel:slurm-wlm; do
        package=${program#*:}
        program=${program%:*}
        if ! command -v "$program" >/dev/null; then
            missing+=("$program")
            [[ " ${packages[*]} " == *" $package "* ]] || packages+=("$package")
        fi
    done
    if ((${#missing[@]})); then
        die 3 "SLURM is not installed here: missing ${missing[*]} (packages: ${packages[*]}).
Install them (as root, Debian/Ubuntu):
    apt-get install -y slurm-wlm munge"
    fi
}

check_root() {
    (($(id -u) == 0)) ||
        die 4 "'$1' must run as root: the daemons run as root here (run it with sudo)"
}

# The daemons are in sbin, which is not on every user's PATH.
PATH=$PATH:${MTKD_SLURM_SBIN-/usr/sbin:/sbin}

# The pid of a daemon of this cluster if it runs, else nothing.
daemon_pid() {
    local name=$1 file=$RUN/$1.pid pid
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if [[ -r /proc/$pid/comm ]] && [[ $(<"/proc/$pid/comm") == "$name" ]]; then
        echo "$pid"
    fi
}

# idle, mixed, allocated, down*, drained, ... as sinfo says; nothing when
# slurmctld does not answer.
node_state() {
    sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024))
    cat >"$CONF.tmp" <<CONF
# Written by slurm/local_cluster.sh on $(date '+%F %T'): a one-node cluster on
# $NODE, everything under $DIR.
ClusterName=mtkd-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups, no systemd: processes are tracked through their parents.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
EnforcePartLimits=ALL
MinJobAge=3600
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    mv "$CONF.tmp" "$CONF"
}

# munged refuses a socket under a folder that not everyone can enter.
check_socket_path() {
    local dir=$DIR
    while [[ $dir != / && -n $dir ]]; do
        if [[ $(stat -c %A "$dir") != ?????????[xt] ]]; then
            die 1 "munged needs every folder above its socket to be searchable by all users, and $dir is not (mode $(stat -c %A "$dir")): chmod o+x $dir, or set MTKD_SLURM_DIR to a folder under /tmp"
        fi
        dir=$(dirname "$dir")
    done
}

start_munged() {
    if [[ -n $(daemon_pid munged) ]]; then return 0; fi
    check_socket_path
    if [[ ! -s $KEY ]]; then
        mungekey --create --keyfile="$KEY" >/dev/null
    fi
    chmod 600 "$KEY"
    rm -f "$SOCKET" "$SOCKET.lock"
    munged --key-file="$KEY" --socket="$SOCKET" --pid-file="$RUN/munged.pid" \
        --log-file="$LOG/munged.log" --seed-file="$MUNGE_DIR/munged.seed" ||
        die 1 "munged did not start: see $LOG/munged.log"
    munge -n -S "$SOCKET" | unmunge -S "$SOCKET" >/dev/null ||
        die 1 "munge does not work (munge -n | unmunge): see $LOG/munged.log"
}

start_daemon() {
    local name=$1
    if [[ -n $(daemon_pid "$name") ]]; then return 0; fi
    "$name" -f "$CONF" >>"$LOG/$name.out" 2>&1 ||
        die 1 "$name did not start: see $LOG/$name.log and $LOG/$name.out"
}

log_hint() {
    echo "logs: $LOG/slurmctld.log $LOG/slurmd.log $LOG/munged.log"
}

cmd_start() {
    check_packages
    check_root start
    local ctld slurmd munged
    ctld=$(daemon_pid slurmctld)
    slurmd=$(daemon_pid slurmd)
    munged=$(daemon_pid munged)
    if [[ -n $ctld && -n $slurmd && -n $munged ]]; then
        say "already running in $DIR (node $NODE: $(node_state))"
        say "export SLURM_CONF=$CONF"
        return 0
    fi
    if [[ -z $ctld && -z $slurmd && -z $munged ]]; then
        say "starting a one-node SLURM cluster in $DIR"
    else
        say "starting what is not running in $DIR:$([[ -n $munged ]] || echo -n " munged")$([[ -n $ctld ]] || echo -n " slurmctld")$([[ -n $slurmd ]] || echo -n " slurmd")"
    fi
    mkdir -p "$DIR" "$MUNGE_DIR" "$RUN" "$LOG" "$DIR/spool/ctld" "$DIR/spool/d"
    # munged wants its socket folder searchable by everyone and nothing
    # writable by others.
    chmod 755 "$DIR" "$MUNGE_DIR"
    if [[ -z $ctld && -z $slurmd ]]; then
        for port in "$PORT" "$((PORT + 1))"; do
            if port_in_use "$port"; then
                die 1 "port $port is in use (another slurmctld or slurmd?): set MTKD_SLURM_PORT to a free port (slurmd takes the next one)"
            fi
        done
        write_conf
    fi
    start_munged
    start_daemon slurmctld
    start_daemon slurmd
    local deadline=$((SECONDS + TIMEOUT)) state="" name
    while ((SECONDS < deadline)); do
        for name in munged slurmctld slurmd; do
            if [[ -z $(daemon_pid "$name") ]]; then
                sleep 1 # a daemon that forks writes its pid file a moment later
                if [[ -z $(daemon_pid "$name") ]]; then
                    tail -n 5 "$LOG/$name.log" "$LOG/$name.out" 2>/dev/null >&2 || true
                    die 1 "$name stopped right after starting: see $LOG/$name.log"
                fi
            fi
        done
        state=$(node_state)
        case $state in
        idle | mixed | allocated | completing)
            say "up: node $NODE is $state ($(nproc) CPUs), partition local"
            say "export SLURM_CONF=$CONF"
            return 0
            ;;
        drained | draining | down*)
            # A node left down by an unclean stop comes back when asked.
            scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
            ;;
        esac
        sleep 1
    done
    local reason
    reason=$(sinfo -h -n "$NODE" -o '%T %E' 2>/dev/null || true)
    die 1 "the node did not become idle within $TIMEOUT s (sinfo: ${reason:-no answer from slurmctld}); $(log_hint)"
}

# wait_for TRIES STEP COMMAND...: runs COMMAND every STEP s until it succeeds,
# at most TRIES times; fails if it never did.
wait_for() {
    local tries=$1 step=$2 i
    shift 2
    for ((i = 0; i < tries; i++)); do
        "$@" && return 0
        sleep "$step"
    done
    return 1
}

process_gone() { [[ ! -d /proc/$1 ]]; }
queue_empty() { [[ -z $(squeue -h -o %i 2>/dev/null) ]]; }

# Stops a daemon: SIGTERM, then SIGKILL after 15 s.
stop_daemon() {
    local name=$1 pid
    pid=$(daemon_pid "$name")
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 150 0.1 process_gone "$pid"; then
        say "$name ($pid) did not stop within 15 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$RUN/$name.pid"
}

cmd_stop() {
    check_root stop
    local ctld slurmd munged
    ctld=$(daemon_pid slurmctld)
    slurmd=$(daemon_pid slurmd)
    munged=$(daemon_pid munged)
    if [[ -z $ctld && -z $slurmd && -z $munged ]]; then
        say "not running (nothing to stop in $DIR)"
        return 0
    fi
    if [[ -n $ctld && -n $slurmd ]]; then
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            say "cancelling $(wc -l <<<"$jobs") job(s): ${jobs//$'\n'/ }"
            # shellcheck disable=SC2086 # one job id a word
            scancel $jobs || true
            # The jobs get SIGTERM, then SIGKILL after KillWait (30 s).
            wait_for 45 1 queue_empty || true
        fi
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    if [[ -n $(daemon_pid munged) ]]; then
        munged --stop --socket="$SOCKET" >/dev/null 2>&1 || stop_daemon munged
        rm -f "$RUN/munged.pid"
    fi
    say "stopped (state, logs and configuration kept in $DIR)"
}

cmd_status() {
    check_packages
    local name pid up=0 state
    for name in munged slurmctld slurmd; do
        pid=$(daemon_pid "$name")
        if [[ -n $pid ]]; then
            say "$name: running (pid $pid)"
            up=$((up + 1))
        else
            say "$name: not running"
        fi
    done
    if ((up == 0)); then
        say "not running (folder $DIR; start it with: slurm/local_cluster.sh start)"
        return 1
    fi
    state=$(node_state)
    say "node $NODE: ${state:-unknown (slurmctld does not answer)}"
    case $state in
    idle | mixed | allocated | completing)
        if ((up == 3)); then
            say "export SLURM_CONF=$CONF"
            return 0
        fi
        ;;
    esac
    say "not usable: $(log_hint)"
    return 1
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export SLURM_CONF=$CONF" ;;
-h | --help | help) usage ;;
*) die 2 "unknown command '${1:-}': use start, stop, status or env (--help: details)" ;;
esac
