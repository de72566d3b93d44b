#!/bin/bash
# submit.sh SHARDS [sbatch options...] - submit a sharded diad run to Slurm:
# a job array of SHARDS tasks (shard.sbatch) and the merge (merge.sbatch),
# which waits for the whole array (--dependency=afterok). The run id is
# made here, once, and exported to every task. The environment variables
# of shard.sbatch configure the run; options after SHARDS go to both sbatch
# calls (e.g. --partition gpu --gres gpu:1 for the array - give those with
# SBATCH_* variables or edit shard.sbatch when the merge should not get them).
#
#   DIAD_CHECKPOINT=/shared/model.safetensors DIAD_DATA=/shared/mvtec \
#   DIAD_RESULTS=/shared/results/runs deploy/slurm/submit.sh 16
#
# Prints: run <id>, array job <id>, merge job <id>.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
shards=${1:?usage: submit.sh SHARDS [sbatch options...]}
shift
[[ $shards =~ ^[1-9][0-9]*$ ]] || { echo "submit.sh: SHARDS must be a positive number, got $shards" >&2; exit 2; }
# shellcheck disable=SC2086
export DIAD_RUN_ID=${DIAD_RUN_ID:-$(${DIAD:-diad} run-id)}
array=$(sbatch --parsable --export=ALL --array=0-$((shards - 1)) "$@" "$here/shard.sbatch")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency=afterok:"$array" --kill-on-invalid-dep=yes "$@" "$here/merge.sbatch")
merge=${merge%%;*}
echo "run $DIAD_RUN_ID"
echo "array job $array"
echo "merge job $merge"
