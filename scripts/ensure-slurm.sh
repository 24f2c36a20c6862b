#!/usr/bin/env bash
# Make sure a one-node Slurm (Debian's slurm-wlm + munge) runs on this machine, for the
# Slurm executor's tests: slurmctld and slurmd on loopback, partitions `gpu` (default)
# and `gpu-b`, and 8 GRES `gpu:fake` on the node (a GPU-less test node). Idempotent:
# does nothing when `scontrol ping` already answers and the node is up.
# Finished jobs stay visible to `scontrol show job` for an hour (MinJobAge) and each
# end is written to the job-completion log, since there is no slurmdbd for `sacct`.
set -euo pipefail
NODE=$(hostname -s)
CONF=/etc/slurm/slurm.conf
COMPLETIONS=/var/log/slurm/jobcomp.log

slurm_up() {
  scontrol ping 2>/dev/null | grep -q 'is UP' &&
    sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

if command -v scontrol >/dev/null && slurm_up; then
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "ensure-slurm: installing slurm-wlm and munge" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
CPUS=$(nproc)
cat >"$CONF" <<CONF
# written by gpupool's scripts/ensure-slurm.sh: one test node on loopback
ClusterName=gpupool-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$COMPLETIONS
MinJobAge=3600
ReturnToService=2
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1000 Gres=gpu:fake:8 State=UNKNOWN
PartitionName=gpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
PartitionName=gpu-b Nodes=$NODE MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
# Slurm counts a GPU GRES by its device files: eight empty files stand in for them.
mkdir -p /var/spool/slurmd/fake-gpus
for i in 0 1 2 3 4 5 6 7; do touch "/var/spool/slurmd/fake-gpus/gpu$i"; done
cat >/etc/slurm/gres.conf <<CONF
NodeName=$NODE Name=gpu Type=fake File=/var/spool/slurmd/fake-gpus/gpu[0-7]
CONF

chown munge:munge /run/munge /etc/munge/munge.key 2>/dev/null || true
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi
# -c: a controller started here starts clean (no jobs or node states from an earlier config)
pgrep -x slurmctld >/dev/null || slurmctld -c
for _ in $(seq 40); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.25; done
# slurmd registers once at start (then retries every 10 s): start it after the controller
pgrep -x slurmd >/dev/null && pkill -x slurmd && sleep 0.5
slurmd
for _ in $(seq 60); do
  if sinfo -h -N -o '%T' 2>/dev/null | grep -qE 'drain|down'; then
    scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
  fi
  slurm_up && { echo "ensure-slurm: $(sinfo -V) up on $NODE" >&2; exit 0; }
  sleep 0.5
done
echo "ensure-slurm: Slurm did not come up; last lines of its logs:" >&2
tail -n 5 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
