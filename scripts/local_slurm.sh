#!/usr/bin/env bash
# A single-node SLURM cluster on this machine (controller and compute daemon side by side), for
# trying the SLURM executor without a real cluster and for the test suite.
#
#   bash scripts/local_slurm.sh start   # install (Debian: slurm-wlm, munge) and start; needs root
#   bash scripts/local_slurm.sh stop    # stop the daemons it started
#   bash scripts/local_slurm.sh status
#
# The daemons run as plain processes (no systemd, no cgroups); their pids are kept in
# /run/mlipft-slurm so that `stop` ends exactly what `start` began.
set -euo pipefail
STATE=/run/mlipft-slurm
HOST=$(hostname -s)
CPUS=$(nproc)
# memory SLURM may hand out, in MB (most of the machine's)
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)

start() {
  if [ "$(id -u)" != "0" ]; then
    echo "local_slurm: starting a cluster needs root" >&2; exit 1
  fi
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null 2>&1) || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; }
  fi
  if status >/dev/null 2>&1; then echo "local_slurm: already running"; return 0; fi
  mkdir -p "$STATE" /etc/munge /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    head -c 1024 /dev/urandom > /etc/munge/munge.key
  fi
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  chmod 711 /run/munge
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
KillWait=10
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
DefMemPerCPU=$((MEM / CPUS))
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  pgrep -x munged > "$STATE/munged.pid"
  /usr/sbin/slurmctld
  /usr/sbin/slurmd
  for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -q -E '^(idle|mix|alloc)'; then
      echo "local_slurm: up ($HOST, $CPUS CPUs, partition debug)"; return 0
    fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "local_slurm: the node did not become idle; see /var/log/slurm/" >&2
  exit 1
}

stop() {
  scancel --user=root >/dev/null 2>&1 || true
  for d in slurmd slurmctld munged; do
    if [ -s "$STATE/$d.pid" ]; then
      kill "$(cat "$STATE/$d.pid")" 2>/dev/null || true
      rm -f "$STATE/$d.pid"
    fi
  done
  echo "local_slurm: stopped"
}

status() {
  sinfo -h -o "%P %t %D" 2>/dev/null | grep -q . && sinfo
}

case "${1:-status}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
