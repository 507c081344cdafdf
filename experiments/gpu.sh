#!/usr/bin/env bash
# The GPU measurements of the README in one run (a CUDA GPU with JAX, PyTorch and
# Flax installed): the GPU tests, then the throughput tables and the parallel-scan
# sweep. Each part has its own time limit, so that a slow one cannot starve the rest.
#
#   bash experiments/gpu.sh [OUT_DIR]     # default runs/gpu
#
# Writes OUT_DIR/{env.txt, tests.txt, c1.md, flash.md, parallel.md} (the
# tables) and OUT_DIR/runs.tgz (every results.jsonl, plot and error log).
set -u
out=${1:-runs/gpu}
mkdir -p "$out" runs
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
# Several processes share the GPU (the benchmark's parent and workers, PyTorch beside
# JAX, test workers): none takes most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
py=${PYTHON:-python3}

{
  nvidia-smi -L
  $py -c "import jax, torch, flax; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, \
torch.cuda.is_available(), torch.backends.cudnn.version(), '| flax', flax.__version__)"
  $py -c "from seqjax.recurrences import cudnn; print('cuDNN path available:', cudnn.available())"
  # cuDNN against the scan on a batch-major input and on a transposed (time-major) one.
  JAX_DEFAULT_MATMUL_PRECISION=highest $py -c "
import jax, jax.numpy as jnp, seqjax
for bf in (True, False):
    ls = [seqjax.LSTM(5, 7, batch_first=bf, cudnn=c) for c in (True, False)]
    p = ls[0].init(jax.random.key(0)); x = jax.random.normal(jax.random.key(1), (3, 4, 5))
    a, b = (l.apply(p, x)[0] for l in ls)
    print('batch_first', bf, 'max |cudnn - scan|', float(jnp.abs(a - b).max()))
"
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

# Parity with PyTorch's golden values is checked without TF32.
JAX_DEFAULT_MATMUL_PRECISION=highest timeout 120 $py -m pytest -q -n 4 -p no:cacheprovider \
  tests/test_gpu.py tests/test_cudnn.py tests/test_torch_weights.py >"$out/tests.txt" 2>&1
tail -n 25 "$out/tests.txt"

bench() {  # name limit flags...
  local name=$1 limit=$2
  shift 2
  timeout "$limit" $py -m experiments.throughput --malloc=default --repeats=5 --scale_lengths= \
    --scale_batches= --workdir="runs/gpu_$name" "$@" >/dev/null 2>"runs/gpu_$name.err"
  cp "runs/gpu_$name/results.md" "$out/$name.md" 2>/dev/null || tail -n 20 "runs/gpu_$name.err"
}

# C1 (the CPU table's first configuration), one layer, every cell, seqjax's paths and the peers.
bench c1 160 --configs=C1=64x256x32x256 --stacks=1 --cells=lstm,gru,rnn \
  --systems=seqjax,seqjax_scan,seqjax_autodiff,seqjax_unroll1,seqjax_cudnn,flax_linen_SimpleCell,flax_linen_LSTMCell,flax_linen_OptimizedLSTMCell,flax_linen_GRUCell,torch,jax_cudnn
# FlashRNN's anchor (b=16, t=1024, h=768), float32 and bfloat16.
bench flash 150 --configs=F=16x1024x768x768 --stacks=1 --cells=lstm,gru \
  --dtypes=float32,bfloat16 --systems=seqjax,seqjax_autodiff,seqjax_cudnn,torch,jax_cudnn
cat "$out/c1.md" "$out/flash.md" 2>/dev/null

# The parallel families' scans on this GPU.
timeout 70 $py -m experiments.parallelism --models=gru,lstm,mingru,lru,transformer \
  --methods=sequential,parallel,chunked,auto --lengths=1024,16384 --batches= --headline=4096x8x256 \
  --repeats=3 --workdir=runs/gpu_parallel >/dev/null 2>runs/gpu_parallel.err
cp runs/gpu_parallel/results.md "$out/parallel.md" 2>/dev/null || tail -n 20 runs/gpu_parallel.err
cat "$out/parallel.md" 2>/dev/null | head -n 60
tar czf "$out/runs.tgz" runs/gpu_*  # every results.jsonl, plot and error log
