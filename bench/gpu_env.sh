# gpu_env.sh — sourced from the repository root by the GPU machine's scripts (run_gpu.sh and
# one-off measurement scripts): the build has this machine's paths compiled in (/work/main/...), so point them
# here, and unpack what bench/pack_gpu.sh gathered (carry `carry`): the build, the libraries and
# the tokenizer. Sets ROOT, ORIG_LD_LIBRARY_PATH (Python gets the machine's own libraries back)
# and exports LD_LIBRARY_PATH and DSPY_SHARED_DIR.
ROOT=$(pwd)
if [ "$(readlink -f /work/main 2>/dev/null)" != "$ROOT" ]; then
  mkdir -p /work && rm -rf /work/main && ln -sfn "$ROOT" /work/main
fi
if [ -f "$ROOT/carry/gpu.tar.xz" ]; then
  mkdir -p /tmp/dspy-gpu && xz -dc "$ROOT/carry/gpu.tar.xz" | tar -C /tmp/dspy-gpu -xf -
  [ -e "$ROOT/build-gpu" ] || ln -sfn /tmp/dspy-gpu/build-gpu "$ROOT/build-gpu"
  # the binaries name their siblings by the build folder they were made in (bench_b2 starts
  # /work/main/build-cuda/bin/dspy)
  [ -e "$ROOT/build-cuda" ] || ln -sfn /tmp/dspy-gpu/build-gpu "$ROOT/build-cuda"
  ln -sfn /tmp/dspy-gpu/shared /work/shared
  ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH-}
  export LD_LIBRARY_PATH=/tmp/dspy-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export DSPY_SHARED_DIR=/work/shared
