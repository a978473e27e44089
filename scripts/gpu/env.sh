# Sourced on a GPU host before running the CUDA binary: puts the CUDA 13 runtime
# libraries it links against (libcublas, libcublasLt, libcudart, libcurand: from a CUDA
# install, or the nvidia-* wheels inside a Python environment such as PyTorch's) and the
# driver's libcuda.so.1 on LD_LIBRARY_PATH. Without them the binary does not start,
# even for --device cpu.
_ab_cublas=$(find /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu /opt /usr -name 'libcublas.so.13' 2>/dev/null | head -1)
_ab_cuda=$(ldconfig -p 2>/dev/null | awk '/libcuda.so.1 /{print $NF; exit}')
[ -n "$_ab_cublas" ] || echo "env.sh: libcublas.so.13 not found (install the CUDA 13 runtime or pip install nvidia-cublas nvidia-cuda-runtime nvidia-curand)" >&2
[ -n "$_ab_cuda" ] || echo "env.sh: the driver's libcuda.so.1 is not known to ldconfig" >&2
# The wheels put each library in its own folder; the CUDA 13 wheels share one (cu13/lib).
for _ab_lib in libcudart.so.13 libcurand.so.10; do
  _ab_dir=$(dirname "$(find "$(dirname "$_ab_cublas")/../.." -name "$_ab_lib" 2>/dev/null | head -1)")
  case ":$LD_LIBRARY_PATH:" in *":$_ab_dir:"*) ;; *) LD_LIBRARY_PATH=$_ab_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} ;; esac
done
export LD_LIBRARY_PATH=$(dirname "$_ab_cublas")${_ab_cuda:+:$(dirname "$_ab_cuda")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
unset _ab_cublas _ab_cuda _ab_lib _ab_dir
