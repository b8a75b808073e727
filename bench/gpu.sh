#!/usr/bin/env bash
# The prepared GPU check (docs/PERFORMANCE.md). On one GPU, from a bare copy of the repository:
# make a synthetic dataset whose 10% sample has the plan's 10% sizes, run A1 with every §5
# metric on, measure img/s, epoch time, evaluation time and GPU utilisation (NVML), and project
# the wall time of the full-data 50-epoch run. Ends within BUDGET_S (470 s: under 8 minutes).
#
#   bash bench/gpu.sh                # on the GPU host
#   bash bench/gpu.sh --cpu-smoke    # the same steps, tiny, on a CPU (or GPU_CHECK_CPU_SMOKE=1)
#
# Needs Python with torch, numpy, pandas, pyarrow, scikit-learn (nvidia-ml-py for the
# utilisation); no install step, no network, no textual or paramiko, git optional.
# Writes to $OUT (default ./gpu-check-out): gpu-check.json and gpu-check.txt (the summary), and
# each step's log and JSON. Environment knobs: PYTHON (python3), SCALE (0.5), EPOCHS (10),
# JOBS (CPU count), BUDGET_S (470), WORK_DIR (where the data goes; a fresh temp folder).
#
# Why scale 0.5: A1 is paired, so each row gives two images; scale 0.5 (109k rows) makes A1's
# 10% view 2,910 / 10,024 / 8,852 images, the plan's §2.2 sizes, at half the synthesis time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

SMOKE=${GPU_CHECK_CPU_SMOKE:-0}
for arg in "$@"; do
    case "$arg" in
        --cpu-smoke) SMOKE=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument '$arg' (the only option is --cpu-smoke)" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
OUT=${OUT:-./gpu-check-out}
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 4)}
BUDGET_S=${BUDGET_S:-470}
if [ "$SMOKE" = 1 ]; then
    DEVICE=cpu; SCALE=${SCALE:-0.002}; EPOCHS=${EPOCHS:-1}
    ENV_ARGS=(--cpu-ok); TRAIN_BENCH=(--quick --threads 1)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    DEVICE=cuda; SCALE=${SCALE:-0.5}; EPOCHS=${EPOCHS:-10}
    ENV_ARGS=(); TRAIN_BENCH=()
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${WORK_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}
mkdir -p "$WORK"
START=$(date +%s)
DEADLINE=$((START + BUDGET_S))
REPORT_S=30       # kept back for the report
SAMPLER=""
FAILED=0
: > "$OUT/phases.tsv"

cleanup() {
    if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; fi
    if [ -z "${WORK_DIR:-}" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

say() { printf '[gpu-check %4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }
now() { date +%s.%N; }
# Each output line as "<unix time> <line>": the report splits the training run into phases by it.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(now)" "$line"; done; }

# step NAME LIMIT_S LOG CMD...: CMD under `timeout`, never past the deadline; its output
# timestamped into LOG (and shown); start, end and exit code into phases.tsv. A failed step is
# recorded and the next one runs.
step() {
    local name=$1 limit=$2 log=$3
    shift 3
    local left=$(( DEADLINE - REPORT_S - $(date +%s) ))
    if [ "$left" -lt 5 ]; then
        say "$name: skipped, the ${BUDGET_S}s budget is spent"
        printf '%s\t%s\tstart\n%s\t%s\tend\t124\n' "$(now)" "$name" "$(now)" "$name" >> "$OUT/phases.tsv"
        FAILED=1
        return 0
    fi
    if [ "$limit" -gt "$left" ]; then limit=$left; fi
    say "$name (at most ${limit}s): $*"
    printf '%s\t%s\tstart\n' "$(now)" "$name" >> "$OUT/phases.tsv"
    printf '%s #start %s\n' "$(now)" "$*" > "$log"
    set +e
    timeout --kill-after=10 "$limit" "$@" 2>&1 | stamp | tee -a "$log" | cut -d' ' -f2-
    local rc=${PIPESTATUS[0]}
    set -e
    printf '%s\t%s\tend\t%s\n' "$(now)" "$name" "$rc" >> "$OUT/phases.tsv"
    if [ "$rc" -ne 0 ]; then
        say "$name: FAILED (exit $rc$([ "$rc" = 124 ] && echo ', out of time'))"
        FAILED=1
    fi
    return "$rc"
}

say "out: $OUT  work: $WORK  python: $PY  device: $DEVICE  scale: $SCALE  epochs: $EPOCHS  jobs: $JOBS"

if ! step env 120 "$OUT/env.log" "$PY" -m bench.gpu_check env --out "$OUT" ${ENV_ARGS[@]+"${ENV_ARGS[@]}"}; then
    say "no usable device: nothing else to measure"
else
    "$PY" -m bench.gpu_check sample --out "$OUT/gpu-samples.csv" --interval 0.5 &
    SAMPLER=$!

    if step synth 240 "$OUT/synth.log" "$PY" -m engine.synth --out "$WORK/data" --scale "$SCALE" --seed 42 \
            --jobs "$JOBS"; then
        cp "$WORK/data/synth.json" "$OUT/synth.json"
        # The stamp caches A1 reads, built and timed on their own, so the training run finds them warm.
        step cache 180 "$OUT/cache.log" "$PY" -m bench.gpu_check cache --data-root "$WORK/data" \
            --experiment A1 --json "$OUT/cache.json" || true
        step train_A1 300 "$OUT/train.log" "$PY" -m engine.train --experiment A1 --config experiments.toml \
            --data-root "$WORK/data" --runs-root "$WORK/runs" --epochs "$EPOCHS" --device "$DEVICE" --fresh || true
        mkdir -p "$OUT/A1"
        for f in metrics.json run.json stdout.log; do
            if [ -f "$WORK/runs/A1/$f" ]; then cp "$WORK/runs/A1/$f" "$OUT/A1/$f"; fi
        done
        if [ "$SMOKE" != 1 ]; then
            # The same run with the step captured as a CUDA graph (engine/training/step.py): speed and AUROC side by side.
            step train_A1_graph 120 "$OUT/train_graph.log" "$PY" -m engine.train --experiment A1 \
                --config experiments.toml --data-root "$WORK/data" --runs-root "$WORK/runs-graph" \
                --epochs "$EPOCHS" --device "$DEVICE" --fresh --cuda-graph || true
            mkdir -p "$OUT/A1-graph"
            for f in metrics.json run.json; do
                if [ -f "$WORK/runs-graph/A1/$f" ]; then cp "$WORK/runs-graph/A1/$f" "$OUT/A1-graph/$f"; fi
            done
        fi
    fi

    step bench_train 150 "$OUT/bench_train.log" "$PY" -m bench.bench_train --device "$DEVICE" \
        --work "$WORK/bench" --json "$OUT/bench_train.json" ${TRAIN_BENCH[@]+"${TRAIN_BENCH[@]}"} || true
    if [ "$SMOKE" != 1 ]; then
        # Last: where a step's time goes (eager foreach/fused AdamW, a CUDA-graph step, torch.compile,
        # whose first step can take a minute; the budget cuts it, not the rest).
        step step_probe 150 "$OUT/step_probe.log" "$PY" -m bench.gpu_step_probe --device "$DEVICE" --batch 128 \
            --steps 40 --json "$OUT/step_probe.json" || true
    fi

    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=""
fi

say "report"
timeout "$REPORT_S" "$PY" -m bench.gpu_check report --out "$OUT" || FAILED=1
say "done in $(( $(date +%s) - START ))s: $OUT/gpu-check.txt and $OUT/gpu-check.json"
if [ "$FAILED" != 0 ]; then
    say "some steps failed or ran out of time: see $OUT/phases.tsv and the step logs"
    exit 1
fi
