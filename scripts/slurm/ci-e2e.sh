#!/usr/bin/env bash
# End-to-end test of the SLURM path on a real one-node cluster (run as root by .ci/run):
# installs slurmctld/slurmd/munge from Debian, writes the config, starts the daemons,
# submits the smoke study as a 4-task array (scripts/slurm/array.sbatch) plus a dependent
# merge (scripts/slurm/merge.sbatch), requeues one task mid-run, and checks that the
# merged trials equal an unsharded run's. Stops the daemons it started.
#
# Needs: target/release/affectbench built, the default model in $AFFECTBENCH_CACHE.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$PWD/target/release/affectbench}
WORK=${WORK:-$PWD/target/slurm-e2e}
export AFFECTBENCH_CACHE=${AFFECTBENCH_CACHE:-$PWD/target/affectbench-cache}
export AFFECTBENCH=$BIN
say() { echo "slurm-e2e: $*"; }
fail() { echo "slurm-e2e: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (it starts the SLURM daemons)"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    for try in 1 2 3; do
        if apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge; then break; fi
        say "apt-get failed (another apt running?); retrying in 10 s"; sleep 10
    done
fi
command -v slurmctld >/dev/null || fail "slurmctld did not install"

host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=affect
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

started_daemons=()
stop_daemons() {
    for pidfile in /run/slurmd.pid /run/slurmctld.pid; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    for pid in "${started_daemons[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_daemons EXIT
chown munge:munge /run/munge 2>/dev/null || true
chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    su -s /bin/sh munge -c /usr/sbin/munged
    started_daemons+=("$(pgrep -n munged || true)")
fi
/usr/sbin/slurmctld -i
/usr/sbin/slurmd
for i in $(seq 60); do
    sinfo -h -o '%t' 2>/dev/null | grep -qE 'idle|mix|alloc' && break
    sleep 1
done
sinfo -h -o '%t' | grep -qE 'idle|mix|alloc' || { tail -20 /var/log/slurm/slurmd.log /var/log/slurm/slurmctld.log; fail "the node did not come up"; }
start=$SECONDS
say "cluster up: $(sinfo -h -o '%P %t %c CPUs %N')"

rm -rf "$WORK"; mkdir -p "$WORK/logs"
STUDY=$PWD/scenarios/studies/smoke.toml
REPS=6
# The reference: one unsharded run of the same plan.
"$BIN" run "$STUDY" --repetitions $REPS --out "$WORK/whole" --no-report --offline >/dev/null 2>"$WORK/logs/whole.log"

# The array (each task 1 CPU), then the merge once every task succeeded.
export OUT=$WORK/out AFFECTBENCH_RUN_ARGS="--repetitions $REPS --progress-every 1"
cd "$WORK/logs"
jid=$(STUDY=$STUDY sbatch --parsable --array=0-3 --cpus-per-task=1 --mem=1G "$OLDPWD/scripts/slurm/array.sbatch")
mid=$(sbatch --parsable --dependency=afterok:"$jid" --mem=1G "$OLDPWD/scripts/slurm/merge.sbatch")
cd "$OLDPWD"
say "submitted array $jid and merge $mid"

# Requeue task 2 once it has written a few trials: SLURM sends SIGTERM, the run stops
# after its trial as `interrupted`, and the same command continues it when requeued.
for i in $(seq 300); do
    n=$( { wc -l < "$OUT/shard-2/trials.jsonl"; } 2>/dev/null || echo 0)
    [ "$n" -ge 3 ] && break
    sleep 0.2
done
[ "${n:-0}" -ge 3 ] || fail "task 2 wrote no trials in 60 s: $(cat "$WORK"/logs/*_2.log 2>/dev/null)"
scontrol requeue "${jid}_2"
say "requeued task 2 after $n trials"
for i in $(seq 60); do
    grep -q '"status": "interrupted"' "$OUT/shard-2/run.json" 2>/dev/null && break
    sleep 0.5
done
grep -q '"status": "interrupted"' "$OUT/shard-2/run.json" || fail "task 2's run.json does not say interrupted: $(cat "$OUT/shard-2/run.json")"
# A requeued job waits out a begin-time delay (~2 min) once it is pending again; let it
# start now, but not within the second of the requeue: slurmd refuses a credential issued
# in the second it revoked the job's old one ("Killing non-startable batch JobId=...: Job
# credential revoked" in slurmctld.log), which failed the task and left the merge pending
# on DependencyNeverSatisfied when the restart came 0.8 s after the requeue.
sleep 2
for i in $(seq 60); do
    if squeue -h -j "${jid}_2" -o '%T' 2>/dev/null | grep -q PENDING; then
        scontrol update jobid="${jid}_2" StartTime=now && break
    fi
    sleep 1
done

for i in $(seq 600); do
    squeue -h -j "$jid,$mid" 2>/dev/null | grep -q . || break
    sleep 1
done
squeue -h -j "$jid,$mid" | grep -q . && fail "jobs still queued after 10 minutes: $(squeue)"
[ -f "$OUT/merged/run.json" ] || fail "no merged run: $(cat "$WORK"/logs/affectbench-merge-*.log)"
grep -q 'progress: ' "$WORK"/logs/affectbench-"$jid"_0.log || fail "the job log shows no progress lines"
grep -q 'interrupted by SIGTERM' "$WORK"/logs/affectbench-"$jid"_2.log || fail "task 2's log does not show the interruption"

python3 - "$WORK/whole/trials.jsonl" "$OUT/merged/trials.jsonl" <<'PY'
import json, sys
def load(p):
    out = {}
    for line in open(p):
        r = json.loads(line); r.pop("timing"); out[r["trial_id"]] = r
    return out
whole, merged = load(sys.argv[1]), load(sys.argv[2])
assert set(whole) == set(merged), f"{len(whole)} vs {len(merged)} trials"
diff = [k for k in whole if whole[k] != merged[k]]
assert not diff, f"{len(diff)} trials differ, e.g. {diff[0]}"
print(f"slurm-e2e: the merged array equals the unsharded run ({len(whole)} trials)")
PY
[ -f "$OUT/merged/report.html" ] || fail "the merge job wrote no report"
say "ok: 4-task array + requeue + dependent merge on $host in $((SECONDS - start)) s"
