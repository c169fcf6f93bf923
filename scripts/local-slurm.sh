#!/usr/bin/env bash
# local-slurm.sh: a real single-node Slurm (Debian 12's 22.05 packages) with
# accounting, for djhpc's tests and demo.
#
#   scripts/local-slurm.sh start    install packages if missing, write configs,
#                                   start whatever is not running, wait until
#                                   the node is usable and sacct answers
#   scripts/local-slurm.sh stop     stop the daemons this script started
#   scripts/local-slurm.sh status   one line per daemon plus sinfo; exit 1 if
#                                   anything is not running
#
# Pieces, in start order: munged -> private MariaDB (127.0.0.1:3307, its own
# datadir; never the system one on 3306) -> slurmdbd -> slurmctld -> slurmd.
# Must run as root. No systemd is assumed: every daemon is started by hand and
# its PID kept in a pid file under the state dir. `stop` only signals those
# PIDs, never processes found by name.
#
# Environment overrides:
#   LOCAL_SLURM_STATE_DIR  state, logs, pid files, DB  [/var/lib/djhpc-slurm]
#   LOCAL_SLURM_CPUS       CPUs the node advertises     [8]
#   LOCAL_SLURM_MEM_MB     RealMemory of the node (MB)  [8000]
#   LOCAL_SLURM_CLUSTER    ClusterName                  [djhpc]
#   LOCAL_SLURM_DB_PORT    port of the private MariaDB  [3307]
#   LOCAL_SLURM_TIMEOUT    seconds to wait for each step [60]
#
# /etc/slurm/slurm.conf and /etc/slurm/slurmdbd.conf are owned by this script:
# they are rewritten on every `start` (and the daemons restarted if they changed).
set -euo pipefail

STATE_DIR=${LOCAL_SLURM_STATE_DIR:-/var/lib/djhpc-slurm}
CPUS=${LOCAL_SLURM_CPUS:-8}
MEM_MB=${LOCAL_SLURM_MEM_MB:-8000}
CLUSTER=${LOCAL_SLURM_CLUSTER:-djhpc}
DB_PORT=${LOCAL_SLURM_DB_PORT:-3307}
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-60}
STOP_TIMEOUT=30

CONF_DIR=/etc/slurm
SLURM_CONF=$CONF_DIR/slurm.conf
DBD_CONF=$CONF_DIR/slurmdbd.conf
CGROUP_CONF=$CONF_DIR/cgroup.conf
NODE=$(hostname -s)

PID_DIR=$STATE_DIR/pids
LOG_DIR=$STATE_DIR/log
MUNGE_DIR=$STATE_DIR/munge      # owned by munge: munged runs as munge and writes here
DB_DIR=$STATE_DIR/mariadb       # private MariaDB datadir
DB_SOCKET=$STATE_DIR/mariadb.sock
DB_USER=slurm
DB_PASS=slurmdbd-local          # only reachable on 127.0.0.1; not a secret

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server-core mariadb-client)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop is the reverse

# ---------------------------------------------------------------- helpers

say() { printf 'local-slurm: %s\n' "$*"; }

die() {
    printf 'local-slurm: ERROR: %s\n' "$*" >&2
    printf 'local-slurm: logs are in %s (munged: %s/munged.log)\n' "$LOG_DIR" "$MUNGE_DIR" >&2
    exit 1
}

# Print the end of a log to stderr, then die: a timeout is useless without it.
die_with_log() {
    local log=$1; shift
    if [[ -f $log ]]; then
        printf -- '--- last lines of %s ---\n' "$log" >&2
        tail -n 20 "$log" >&2 || true
        printf -- '---\n' >&2
    fi
    die "$*; see $log"
}

pid_file() {
    case $1 in
        munged) echo "$MUNGE_DIR/munged.pid" ;;
        *) echo "$PID_DIR/$1.pid" ;;
    esac
}

log_file() {
    case $1 in
        munged) echo "$MUNGE_DIR/munged.log" ;;
        *) echo "$LOG_DIR/$1.log" ;;
    esac
}

# True if PID exists and is not a zombie. kill -0 is not enough: this kind of
# VM's PID 1 reaps zombies late, and a zombie answers kill -0.
pid_alive() {
    local stat rest
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    rest=${stat##*) }              # drop "pid (comm) ", comm may contain spaces
    [[ ${rest%% *} != Z ]]
}

# Print the PID of our running copy of daemon $1 and succeed, or fail.
# The pid must be alive AND be that program, so a stale pid file whose number
# got reused by something else is never mistaken for (or killed as) a daemon.
running_pid() {
    local file pid
    file=$(pid_file "$1")
    [[ -r $file ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n $pid ]] && pid_alive "$pid" || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    echo "$pid"
}

# munge may already be provided by someone else (e.g. systemd on a CI VM
# started it when the package was installed). Then we use it, never stop it.
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# Poll a command until it succeeds; die after TIMEOUT seconds with the log.
wait_for() {
    local what=$1 log=$2; shift 2
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die_with_log "$log" "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}

# Wait for a self-daemonizing program's pid file to name a live process.
wait_for_pid() {
    wait_for "$1 to write its pid file $(pid_file "$1")" "$(log_file "$1")" running_pid "$1"
}

# Write $1 with mode $2 from stdin only if the content differs.
# Succeeds if the file changed, fails if it was already up to date.
install_if_changed() {
    local file=$1 mode=$2 tmp
    tmp=$(mktemp "$file.XXXXXX")
    cat >"$tmp"
    chmod "$mode" "$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    mv -f "$tmp" "$file"
}

# ---------------------------------------------------------------- packages

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
    done
}

ensure_packages() {
    local missing
    missing=$(missing_packages)
    [[ -z $missing ]] && return 0
    say "installing: $(echo $missing)"
    export DEBIAN_FRONTEND=noninteractive
    # Lock::Timeout: wait for another apt/dpkg (e.g. unattended-upgrades) instead of failing.
    apt-get -o DPkg::Lock::Timeout=300 update -q
    # shellcheck disable=SC2086  # word splitting of the package list is wanted
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $missing
}

# ---------------------------------------------------------------- configs

# cgroup v1's memory controller, writable by root: what task/cgroup needs.
memory_cgroup_usable() {
    local probe=/sys/fs/cgroup/memory/djhpc-probe-$$
    [[ -f /sys/fs/cgroup/memory/memory.limit_in_bytes ]] && mkdir "$probe" 2>/dev/null \
        && rmdir "$probe"
}

# The slurm.conf lines that make --mem a limit. Without a usable memory cgroup,
# Slurm's own polling kills a task that goes over, but records it FAILED, not
# OUT_OF_MEMORY, unlike the clusters (so `start` says so).
memory_enforcement() {
    if memory_cgroup_usable; then
        echo "TaskPlugin=task/cgroup"
    else
        printf '%s\n' "TaskPlugin=task/none" "JobAcctGatherParams=OverMemoryKill"
    fi
}

render_slurm_conf() {
    cat <<EOF
# Written by djhpc scripts/local-slurm.sh; rewritten on every start.
ClusterName=$CLUSTER
# Name(address) so no DNS is needed for the controller or the node.
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
MailProg=/bin/true

StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
# Pid files in the state dir: the daemons fork, so these are how stop finds them.
SlurmctldPidFile=$PID_DIR/slurmctld.pid
SlurmdPidFile=$PID_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# Memory is enforced as on the clusters: task/cgroup confines each step to its
# --mem (cgroup.conf), the kernel kills a step that goes over, and Slurm records
# the task OUT_OF_MEMORY. Processes are still tracked without cgroups.
ProctrackType=proctrack/linuxproc
$(memory_enforcement)

# Cores and memory are consumable so --cpus-per-task/--mem behave like on a real
# cluster; a small DefMemPerCPU keeps $CPUS one-CPU jobs running side by side.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256

# batch_sched_delay=0: the default (3) starts queued batch jobs only every 3 s
# (a 100-task array took 129 s instead of ~13 s). sched_min_interval already
# defaults to 2 microseconds.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
MaxArraySize=10001
MaxJobCount=20000
# Fast kills so time-limit tests finish quickly.
KillWait=5
InactiveLimit=0
# A node that registers with a valid config comes back by itself, even from DOWN.
ReturnToService=2

AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
# Sample every second so MaxRSS is filled in even for short jobs.
JobAcctGatherFrequency=task=1

# Advertise $CPUS CPUs whatever the real core count; config_overrides stops
# slurmd from marking the node INVAL ("Low socket*core*thread count").
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 RealMemory=$MEM_MB State=UNKNOWN
# Billing like Sigma2's Saga "normal" partition (jobs/projects_accounting.md in
# Sigma2's documentation): a CPU costs 1, a GiB of memory 0.2577031, and a job
# is billed the largest of the two (MAX_TRES), so AllocTRES's billing= follows
# the site's rule and djhpc's billing hours are real in tests.
PriorityFlags=MAX_TRES
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP TRESBillingWeights="CPU=1.0,Mem=0.2577031G"
EOF
}

render_cgroup_conf() {
    cat <<EOF
# Written by djhpc scripts/local-slurm.sh; rewritten on every start.
# cgroup v1's memory controller, as most clusters still run it: --mem is a hard
# limit per job, and going over ends the task OUT_OF_MEMORY.
CgroupPlugin=cgroup/v1
CgroupMountpoint=/sys/fs/cgroup
ConstrainRAMSpace=yes
ConstrainSwapSpace=no
ConstrainCores=no
ConstrainDevices=no
EOF
}

render_slurmdbd_conf() {
    cat <<EOF
# Written by djhpc scripts/local-slurm.sh; rewritten on every start.
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$PID_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
}

# Globals set by write_configs, read by cmd_start.
SLURM_CONF_CHANGED=false
DBD_CONF_CHANGED=false

write_configs() {
    mkdir -p "$CONF_DIR"
    if render_slurm_conf | install_if_changed "$SLURM_CONF" 0644; then
        SLURM_CONF_CHANGED=true
        say "wrote $SLURM_CONF"
    fi
    if render_cgroup_conf | install_if_changed "$CGROUP_CONF" 0644; then
        SLURM_CONF_CHANGED=true
        say "wrote $CGROUP_CONF"
    fi
    # slurmdbd refuses a config readable by others (it holds the DB password).
    if render_slurmdbd_conf | install_if_changed "$DBD_CONF" 0600; then
        DBD_CONF_CHANGED=true
        say "wrote $DBD_CONF"
    fi
}

make_dirs() {
    mkdir -p "$PID_DIR" "$LOG_DIR" "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    # munged checks that its directories are owned by munge and not writable by others.
    mkdir -p "$MUNGE_DIR" /run/munge
    chown munge:munge "$MUNGE_DIR" /run/munge
    chmod 0700 "$MUNGE_DIR"
    chmod 0755 /run/munge
}

# ---------------------------------------------------------------- daemons

start_munged() {
    if munge_works; then
        running_pid munged >/dev/null || say "munged: using an already running munged (not started by this script)"
        return 0
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then     # normally made by munge's postinst
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    rm -f "$(pid_file munged)"
    say "starting munged"
    # --force: remove a stale socket left in /run/munge by a munged that died.
    # Its own log file must be created by munge itself (it checks the owner), so
    # errors printed before it opens that log go to a separate root-owned file.
    runuser -u munge -- /usr/sbin/munged --force \
        --pid-file="$(pid_file munged)" --log-file="$(log_file munged)" \
        </dev/null >>"$LOG_DIR/munged.out" 2>&1 \
        || die_with_log "$LOG_DIR/munged.out" "munged failed to start"
    wait_for_pid munged
    wait_for "munge -n | unmunge" "$(log_file munged)" munge_works
}

db_sql() { mariadb --no-defaults --socket="$DB_SOCKET" -u root -e "$1"; }

start_mariadbd() {
    local log
    log=$(log_file mariadbd)
    if [[ ! -d $DB_DIR/mysql ]]; then
        say "initialising private MariaDB datadir $DB_DIR"
        # Runs as root (--user=root): keeps this independent of a system "mysql" user.
        mariadb-install-db --no-defaults --user=root --datadir="$DB_DIR" \
            --skip-test-db --auth-root-authentication-method=socket >>"$log" 2>&1 \
            || die_with_log "$log" "mariadb-install-db failed"
    fi
    rm -f "$(pid_file mariadbd)"
    say "starting MariaDB on 127.0.0.1:$DB_PORT"
    # --no-defaults must come first: never read /etc/mysql (the system server's config).
    # setsid + no inherited stdio: the server must outlive this script and must
    # not hold a caller's pipe open (e.g. subprocess.run(capture_output=True)).
    setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DB_DIR" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --socket="$DB_SOCKET" \
        --pid-file="$(pid_file mariadbd)" --log-error="$log" \
        --skip-name-resolve --innodb-lock-wait-timeout=900 \
        </dev/null >>"$log" 2>&1 &
    wait_for_pid mariadbd
    wait_for "MariaDB to accept connections" "$log" \
        mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping
}

# Database and user for slurmdbd; every statement is idempotent.
ensure_acct_db() {
    db_sql "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
            CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
            GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'127.0.0.1';
            GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';" \
        || die_with_log "$(log_file mariadbd)" "could not create slurm_acct_db / user $DB_USER"
}

dbd_answers() { sacctmgr -n -P list cluster format=Cluster; }

start_slurmdbd() {
    ensure_acct_db
    rm -f "$(pid_file slurmdbd)"
    say "starting slurmdbd"
    slurmdbd </dev/null >>"$(log_file slurmdbd)" 2>&1 \
        || die_with_log "$(log_file slurmdbd)" "slurmdbd failed to start"
    wait_for_pid slurmdbd
}

# The cluster must be known to slurmdbd before slurmctld registers with it.
ensure_cluster() {
    wait_for "slurmdbd to answer sacctmgr" "$(log_file slurmdbd)" dbd_answers
    if ! dbd_answers | grep -qx "$CLUSTER"; then
        say "adding cluster $CLUSTER to the accounting database"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null \
            || die_with_log "$(log_file slurmdbd)" "sacctmgr add cluster $CLUSTER failed"
    fi
}

# slurmctld and slurmd fork themselves and write the pid files named in slurm.conf.
start_slurm_daemon() {
    local name=$1
    rm -f "$(pid_file "$name")"
    say "starting $name"
    "$name" </dev/null >>"$(log_file "$name")" 2>&1 \
        || die_with_log "$(log_file "$name")" "$name failed to start"
    wait_for_pid "$name"
}

start_daemon() {
    case $1 in
        munged) start_munged ;;
        mariadbd) start_mariadbd ;;
        slurmdbd) start_slurmdbd ;;
        *) start_slurm_daemon "$1" ;;
    esac
}

# SIGTERM the recorded PID, wait for it to go (a zombie counts as gone),
# SIGKILL after STOP_TIMEOUT seconds.
stop_daemon() {
    local name=$1 pid deadline
    if ! pid=$(running_pid "$name"); then
        rm -f "$(pid_file "$name")"
        return 0
    fi
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
    if pid_alive "$pid"; then
        say "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 10))
        while pid_alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
        pid_alive "$pid" && die "could not kill $name (pid $pid)"
    fi
    rm -f "$(pid_file "$name")"
}

# ---------------------------------------------------------------- readiness

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n 1; }

# Wait until the node can run jobs. Its state survives slurmctld restarts, so a
# node left DOWN/DRAINED/INVAL by an earlier run (e.g. a bad config) is resumed.
wait_for_node() {
    local deadline=$((SECONDS + TIMEOUT)) state last_resume=-10
    while :; do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            down | drained | draining | inval | fail | failing)
                if ((SECONDS - last_resume >= 5)); then
                    say "node $NODE is $state; resuming it"
                    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                    last_resume=$SECONDS
                fi
                ;;
        esac
        ((SECONDS < deadline)) || die_with_log "$(log_file slurmctld)" \
            "timed out after ${TIMEOUT}s waiting for node $NODE to be idle (state: '${state:-no answer}'); see also $(log_file slurmd)"
        sleep 0.3
    done
}

sacct_answers() { sacct -n -X -S now; }

# ---------------------------------------------------------------- commands

print_status() {
    local name pid all_ok=0
    for name in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$name"); then
            printf '%-10s running (pid %s)\n' "$name" "$pid"
        elif [[ $name == munged ]] && munge_works; then
            printf '%-10s running (not started by this script)\n' "$name"
        else
            printf '%-10s stopped\n' "$name"
            all_ok=1
        fi
    done
    if running_pid slurmctld >/dev/null; then
        sinfo || all_ok=1
    else
        echo "(slurmctld not running: no sinfo)"
    fi
    return "$all_ok"
}

cmd_start() {
    local t0=$SECONDS name
    ensure_packages
    make_dirs
    write_configs

    # Changed configs: restart the daemons that read them. (scontrol reconfigure
    # does not apply everything, e.g. node CPU counts or SelectType.)
    # slurmdbd.conf only changes with the state dir or DB port, which MariaDB uses too.
    if $DBD_CONF_CHANGED; then stop_daemon slurmdbd; stop_daemon mariadbd; fi
    if $SLURM_CONF_CHANGED; then stop_daemon slurmd; stop_daemon slurmctld; fi

    for name in "${DAEMONS[@]}"; do
        if ! running_pid "$name" >/dev/null; then start_daemon "$name"; fi
        # Checked every time (cheap), e.g. in case LOCAL_SLURM_CLUSTER changed.
        if [[ $name == slurmdbd ]]; then ensure_cluster; fi
    done

    wait_for_node
    wait_for "sacct to answer" "$(log_file slurmdbd)" sacct_answers
    memory_cgroup_usable || say "WARNING: no writable cgroup v1 memory controller: a task " \
        "over its --mem is killed but recorded FAILED, not OUT_OF_MEMORY"
    print_status
    say "ready in $((SECONDS - t0))s (cluster $CLUSTER, node $NODE, partition debug, $CPUS CPUs)"
}

cmd_stop() {
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_daemon "${DAEMONS[i]}"
    done
    say "stopped"
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

main() {
    case ${1:-} in
        -h | --help | help) usage; return 0 ;;
        start | stop | status) ;;
        *) usage >&2; return 2 ;;
    esac
    [[ $EUID -eq 0 ]] || die "must run as root"
    case $1 in
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) print_status ;;
    esac
}

main "$@"
