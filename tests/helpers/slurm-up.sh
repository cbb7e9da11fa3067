#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (Debian slurm-wlm + munge) for the Slurm tests and
# benchmarks; idempotent. `--install` also installs the packages (as root, with apt-get).
# Prints the partition line of `sinfo` once the node is idle; exit 1 with the reason otherwise.
set -u
if ! command -v slurmctld >/dev/null; then
  if [ "${1:-}" = "--install" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null 2>&1 \
      || { echo "apt-get install slurm-wlm munge failed"; exit 1; }
  else
    echo "slurm-wlm is not installed (.ci/run installs it: apt-get install slurm-wlm munge)"; exit 1
  fi
fi
[ "$(id -u)" = 0 ] || { echo "starting slurmctld/slurmd needs root"; exit 1; }
# sinfo keeps retrying a controller that does not answer: every call has a deadline
state() { timeout 5 sinfo -h -o "%P %a %t %D" 2>/dev/null; }
if state | grep -q "up idle\|up mix\|up alloc"; then state; exit 0; fi
H=$(hostname)
mkdir -p /etc/munge /etc/slurm /var/log/munge /run/munge /var/lib/munge /var/spool/slurmctld-dlxtest /var/spool/slurmd /var/log/slurm
[ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge; chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || /usr/sbin/munged --force 2>/dev/null
MEM=$(( $(free -m | awk '/Mem:/{print $2}') - 1024 ))
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=dlxtest
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
StateSaveLocation=/var/spool/slurmctld-dlxtest
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ReturnToService=2
JobRequeue=1
NodeName=$H CPUs=$(nproc) RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=$H Default=YES MaxTime=INFINITE State=UP
CONF
# a state directory of its own: slurmctld refuses to start on another cluster's saved state
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
for i in $(seq 30); do state | grep -q idle && break; pgrep -x slurmctld >/dev/null || break; sleep 1; done
state | grep -q "idle\|mix\|alloc" || { echo "the Slurm node did not come up (see /var/log/slurm/)"; exit 1; }
state
