#!/bin/bash
# selftest.sh - run a sharded diad evaluation on a real single-node Slurm
# cluster and check it against one process (make slurm-test; .ci/run).
#
# As root: installs Debian's slurm-wlm and munge if missing, starts munged,
# slurmctld and slurmd (2 CPUs, state in a temporary folder, ports 16817/
# 16818), makes a small synthetic dataset and a tiny model, submits a
# 4-task array with submit.sh, waits for the merge job, and compares the
# merged run's metrics and scores with `diad test --batch-invariant` in one
# process: they must be equal (CSV exports compared byte for byte, run ids
# aside). Every daemon it started is stopped on exit, whatever happens.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
say() { echo "slurm-test: $*" >&2; }
die() { say "FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (it starts slurmctld, slurmd and munged)"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge >&2
fi

# Daemons' state on the host; data and results inside the repository,
# which diad sees at the same path also when it runs in the build root.
work=$(mktemp -d /tmp/diad-slurm.XXXXXX)
chmod 755 "$work"
mkdir -p "$repo/var"
data=$(mktemp -d "$repo/var/slurm-test.XXXXXX")
pids=()
cleanup() {
  set +e
  local daemons=() p f
  for f in "$work"/slurmctld.pid "$work"/slurmd.pid "$work"/munge/munged.pid; do
    [ -s "$f" ] && daemons+=("$(cat "$f")")
  done
  for p in "${pids[@]}" "${daemons[@]}"; do kill "$p" 2>/dev/null; done
  # Daemons rename themselves, so wait on their pids (10 s, then SIGKILL).
  for _ in $(seq 50); do
    alive=0
    for p in "${daemons[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.2
  done
  for p in "${daemons[@]}"; do kill -0 "$p" 2>/dev/null && { say "WARNING: daemon $p did not stop; killing it"; kill -9 "$p"; }; done
  if [ "${KEEP:-0}" = 1 ]; then say "kept $work and $data"; else rm -rf "$work" "$data"; fi
}
trap cleanup EXIT

# munge: its own key and socket, so a host's munged is left alone.
# (the socket's folder must be open to all, the key's to munge alone;
# munged runs as munge and writes its pid file beside its socket)
mkdir -p "$work/munge" "$work/mungekey"
chown munge: "$work/munge" "$work/mungekey"
chmod 755 "$work/munge"
chmod 700 "$work/mungekey"
dd if=/dev/urandom of="$work/mungekey/munge.key" bs=1024 count=1 status=none
chown munge: "$work/mungekey/munge.key"
chmod 400 "$work/mungekey/munge.key"
sock="$work/munge/munge.socket"
runuser -u munge -- munged --key-file="$work/mungekey/munge.key" --socket="$sock" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed" ||
  die "munged did not start: $(cat "$work/munge/munged.log" 2>/dev/null)"

host=$(hostname -s)
mkdir -p "$work/state" "$work/spool" "$data/jobs"
export SLURM_CONF="$work/slurm.conf"
cat > "$SLURM_CONF" <<CONF
ClusterName=diadtest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
AuthInfo=socket=$sock
CredType=cred/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
NodeName=$host NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -f "$SLURM_CONF" || die "slurmctld did not start: $(tail -5 "$work/slurmctld.log" 2>/dev/null)"
slurmd -f "$SLURM_CONF" || die "slurmd did not start: $(tail -5 "$work/slurmd.log" 2>/dev/null)"
for i in $(seq 60); do
  state=$(sinfo -h -N -o %t 2>/dev/null | head -1)
  case "$state" in idle*|mix*|alloc*) break ;; esac
  sleep 1
done
case "$state" in idle*|mix*|alloc*) say "cluster up: node $host $state" ;; *) die "node state '$state' after 60 s: $(tail -5 "$work/slurmd.log")" ;; esac

# The data, a tiny model, and the single-process reference.
T=backend/buildenv/torchenv.sh
make --no-print-directory build >&2
diad() { "$T" exec "$repo/bin/diad" "$@"; }
diad synth --out "$data/data" --size 64 --train 2 --test-good 3 --per-defect 2 --categories woven,disc >&2
diad train --base cpu --data "$data/data" --out "$data/model" --steps 2 --ae-steps 2 --seed 1 --quiet >/dev/null
ckpt="$data/model/model.safetensors"
diad test --checkpoint "$ckpt" --scorer pixel+ssim --device cpu --seed 3 --data "$data/data" \
  --batch-invariant --threads 1 --quiet --no-shard-env --results "$data/single" >&2

# The sharded run, through the project's own Slurm scripts.
export DIAD="$repo/$T exec $repo/bin/diad" DIAD_CHECKPOINT="$ckpt" DIAD_DATA="$data/data" \
  DIAD_RESULTS="$data/sharded" DIAD_ARGS="--scorer pixel+ssim --device cpu --seed 3 --batch 2"
cd "$data/jobs"
out=$("$repo/deploy/slurm/submit.sh" 4)
cd "$repo"
echo "$out" >&2
run=$(echo "$out" | awk '/^run /{print $2}')
merge=$(echo "$out" | awk '/^merge job /{print $3}')
[ -n "$run" ] && [ -n "$merge" ] || die "submit.sh printed no run or merge job"
for i in $(seq 600); do
  if ! squeue -h -j "$merge" 2>/dev/null | grep -q .; then break; fi
  sleep 1
done
squeue -h 2>/dev/null | grep -q . && die "jobs still queued after 10 minutes: $(squeue)"
cat "$data"/jobs/diad-merge-*.out >&2 || true
[ -f "$data/sharded/$run/run.json" ] || { cat "$data"/jobs/*.out >&2; die "the merge wrote no run (outputs above)"; }
parts=$(find "$data/sharded/$run" -maxdepth 1 -name "shard=*-of-0004" | wc -l)
[ "$parts" = 4 ] || die "$parts partitions, want 4"

single=$(ls "$data/single")
for table in metrics images; do
  diad export "$single" --results "$data/single" --table "$table" | sed "s/$single//g" | cut -d, -f1-13 > "$work/a.$table"
  diad export "$run" --results "$data/sharded" --table "$table" | sed "s/$run//g" | cut -d, -f1-13 > "$work/b.$table"
  cmp -s "$work/a.$table" "$work/b.$table" || { diff "$work/a.$table" "$work/b.$table" | head >&2; die "$table differ between one process and the Slurm run"; }
  [ "$(wc -l < "$work/a.$table")" -gt 5 ] || die "$table: only $(wc -l < "$work/a.$table") lines"
done
say "ok: 4 Slurm array tasks + merge (run $run) equal one process: $(($(wc -l < "$work/a.images") - 1)) images, $(($(wc -l < "$work/a.metrics") - 1)) metric values"
