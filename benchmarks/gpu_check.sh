#!/usr/bin/env bash
# The GPU check: one script that exercises the whole CUDA path and prints its figures.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, on a CUDA machine
#   HYBRIDLIB_DATA=/data bash benchmarks/gpu_check.sh   # with the real CIFAR-10 there
#
# It needs no network: it uses the Python on PATH (torch and torchvision installed) and
# installs what that lacks (pytest, pandas, ...) only from wheels in ./.whl if present.
# Every step has its own time limit, so the whole check ends within about 5 minutes,
# and a failing step is reported and the next one runs. It prints: the versions and the
# GPU, `pytest -m cuda`, `bench` for cnn and cnn_lstm_skip (CIFAR-10 when the data root
# holds it, else the embedded digits), a short training run with the graph step and its
# eager twin, and a small `reproduce --jobs 2` grid.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT="${OUT:-$(mktemp -d)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HYBRIDLIB_RUNS="$OUT/runs" PYTHONUNBUFFERED=1
failed=0

step() {  # step SECONDS TITLE COMMAND...: run one step under its own time limit
    local limit=$1 title=$2
    shift 2
    echo
    echo "=== $title (limit ${limit}s)"
    local start=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local code=$?
    echo "=== $title: exit $code after $((SECONDS - start)) s"
    [ "$code" -eq 0 ] || failed=$((failed + 1))
}

if [ -d .whl ]; then
    "$PY" -m pip install -q --no-index --find-links .whl pytest pandas matplotlib seaborn \
        scikit-learn scipy tqdm 2>&1 | tail -2
fi

step 30 "versions and GPU" "$PY" - <<'EOF'
import platform, torch, torchvision
print("python", platform.python_version(), "| torch", torch.__version__,
      "| torchvision", torchvision.__version__, "| CUDA", torch.version.cuda,
      "| cuDNN", torch.backends.cudnn.version())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
assert torch.cuda.is_available(), "no CUDA device"
EOF

# only the files with CUDA tests: the others import the notebook and site tools' packages
# (papermill, nbval, ...), which a bare GPU machine lacks; every failure is listed
CUDA_TESTS=$(grep -l "pytest.mark.cuda" tests/test_*.py)
step 150 "pytest -m cuda" "$PY" -m pytest -q -m cuda -p no:cacheprovider --no-header $CUDA_TESTS

DATASET=digits
if "$PY" -c "from hybridlib.data import load_dataset; load_dataset('cifar10', limit=10)" \
    >/dev/null 2>&1; then
    DATASET=cifar10
fi
for model in cnn cnn_lstm_skip; do
    step 60 "bench $model on $DATASET" "$PY" -m hybridlib bench --model "$model" \
        --dataset "$DATASET" --batch-size 16 --steps 100 --repeats 3 --device cuda
done

for mode in graph eager; do
    step 45 "train cnn_lstm_skip, $mode step" "$PY" -m hybridlib train --model cnn_lstm_skip \
        --dataset "$DATASET" --limit 2000 --epochs 2 --lr 1e-3 --device cuda \
        --step-mode "$mode" --out "$OUT/train-$mode"
done

step 60 "reproduce --jobs 2 (paper A models, 1 epoch)" "$PY" -m hybridlib reproduce \
    --table paper-a --datasets "$DATASET" --seeds 1 --epochs 1 --limit 2000 --device cuda \
    --step-mode auto --jobs 2 --out "$OUT/grid"

echo
echo "GPU check: $failed step(s) failed; outputs in $OUT"
exit "$failed"
