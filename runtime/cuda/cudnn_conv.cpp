// cuDNN convolutions for the CUDA backend (see cudnn_conv.h). Built into the real backend
// only; without cuDNN (EQUIVAE_HAVE_CUDNN undefined) every entry point throws Error.
#include "runtime/cuda/cudnn_conv.h"

#include <algorithm>
#include <string>
#include <vector>

#include "runtime/cuda/conv_geometry.h"
#include "runtime/error.h"

#if defined(EQUIVAE_HAVE_CUDNN)
#include <cudnn.h>
#endif

namespace equivae {

#if defined(EQUIVAE_HAVE_CUDNN)
namespace {

// Workspace cap per call: algorithms that need more (FFT variants) are passed over.
constexpr size_t kMaxWorkspaceBytes = size_t(64) << 20;

void cudnn_check(cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS)
    throw Error("cuda backend", std::string(what) + ": " + cudnnGetErrorString(status));
}
#define EQUIVAE_CUDNN_CHECK(expr) cudnn_check((expr), #expr)

// The first of cuDNN's ranked candidates (by its heuristics, or by measured time when
// benchmarking) that ran successfully, is deterministic, fits the workspace cap, needs no tensor
// ops unless they are allowed, and that `accepts` (which sets the candidate's math mode and asks
// its workspace): cuDNN can rank an algorithm that the workspace query then refuses, so a
// refusal moves on to the next candidate, as PyTorch's cuDNN search does, rather than failing.
template <class Perf, class Accepts>
const Perf& pick(const Perf* perf, int count, bool tensor_ops, const char* call, Accepts accepts) {
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC &&
        perf[i].memory <= kMaxWorkspaceBytes &&
        // ALLOW_CONVERSION converts float data to FP16: less than the TF32 allowed here.
        perf[i].mathType != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
        (tensor_ops || perf[i].mathType != CUDNN_TENSOR_OP_MATH) && accepts(perf[i]))
      return perf[i];
  throw Error("cuda backend", std::string(call) + ": none of cuDNN's " + std::to_string(count) +
                                  " candidates is a deterministic algorithm within " +
                                  std::to_string(kMaxWorkspaceBytes >> 20) +
                                  " MiB of workspace that its workspace query accepts");
}

// Room for every candidate cuDNN can rank (its MaxCount, not the algorithm enum's size: an
// algorithm may be listed once per math mode).
template <class Perf>
std::vector<Perf> candidates(cudnnStatus_t (*max_count)(cudnnHandle_t, int*), cudnnHandle_t h) {
  int most = 0;
  EQUIVAE_CUDNN_CHECK(max_count(h, &most));
  return std::vector<Perf>(size_t(std::max(most, 1)));
}

}  // namespace

struct CudnnConvolutions::Handle {
  cudnnHandle_t handle = nullptr;
  cudnnHandle_t side = nullptr;  // bound to side_stream for good
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
  cudnnMathType_t math = CUDNN_DEFAULT_MATH;
  bool benchmark = false;
  cudaStream_t stream = nullptr;  // the constructor's: where cudnnFind* times candidates
  cudaStream_t side_stream = nullptr;
  // The handle for a call on `on`: the side stream's own, else the main one set to `on`.
  cudnnHandle_t for_stream(cudaStream_t on) const {
    if (side && on == side_stream) return side;
    EQUIVAE_CUDNN_CHECK(cudnnSetStream(handle, on));
    return handle;
  }
  ~Handle() {
    if (side) cudnnDestroy(side);
    if (handle) cudnnDestroy(handle);
  }
};

struct CudnnConvolutions::Plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;  // conv_x, conv_y
  cudnnFilterDescriptor_t w = nullptr;
  // One convolution descriptor per call: each carries the math mode of its algorithm.
  cudnnConvolutionDescriptor_t fwd_conv = nullptr, data_conv = nullptr, filter_conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t data_algo{};
  cudnnConvolutionBwdFilterAlgo_t filter_algo{};
  size_t fwd_bytes = 0, data_bytes = 0, filter_bytes = 0;
  ~Plan() {
    for (cudnnConvolutionDescriptor_t c : {fwd_conv, data_conv, filter_conv})
      if (c) cudnnDestroyConvolutionDescriptor(c);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
  size_t workspace() const { return std::max(fwd_bytes, std::max(data_bytes, filter_bytes)); }
};

CudnnConvolutions::CudnnConvolutions(cudaStream_t stream, cudaStream_t side_stream,
                                     bool double_precision, bool strict_fp32, bool benchmark)
    : handle_(std::make_unique<Handle>()) {
  EQUIVAE_CUDNN_CHECK(cudnnCreate(&handle_->handle));
  EQUIVAE_CUDNN_CHECK(cudnnSetStream(handle_->handle, stream));
  handle_->stream = stream;
  if (side_stream && side_stream != stream) {
    EQUIVAE_CUDNN_CHECK(cudnnCreate(&handle_->side));
    EQUIVAE_CUDNN_CHECK(cudnnSetStream(handle_->side, side_stream));
    handle_->side_stream = side_stream;
  }
  handle_->benchmark = benchmark;
  handle_->type = double_precision ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
  // FMA math excludes TF32 tensor cores (what strict_fp32 promises for cuBLAS too); the
  // default lets cuDNN use them for float.
  handle_->math = strict_fp32 || double_precision ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
}

CudnnConvolutions::~CudnnConvolutions() {
  plans_.clear();  // descriptors before the handle
}

CudnnConvolutions::Plan& CudnnConvolutions::plan(const cpu::Conv2dShape& s, bool transposed) {
  const auto key = convolution_key(s, transposed);
  if (auto it = plans_.find(key); it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  const cudnnHandle_t h = handle_->handle;
  const cudnnDataType_t type = handle_->type;
  // conv_y = conv(conv_x, W): conv2d itself, or the convolution a transpose runs backwards.
  const cpu::Conv2dShape c = forward_convolution(s, transposed);
  EQUIVAE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
  EQUIVAE_CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
  EQUIVAE_CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
  EQUIVAE_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, type, c.N, c.C_in, c.H, c.W));
  EQUIVAE_CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, type, c.N, c.C_out,
                                                 cpu::conv_out_h(c, false),
                                                 cpu::conv_out_w(c, false)));
  EQUIVAE_CUDNN_CHECK(
      cudnnSetFilter4dDescriptor(p->w, type, CUDNN_TENSOR_NCHW, c.C_out, c.C_in, c.KH, c.KW));
  for (cudnnConvolutionDescriptor_t* d : {&p->fwd_conv, &p->data_conv, &p->filter_conv}) {
    EQUIVAE_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(d));
    EQUIVAE_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(*d, c.pad, c.pad, c.stride, c.stride, 1, 1,
                                                        CUDNN_CROSS_CORRELATION, type));
    EQUIVAE_CUDNN_CHECK(cudnnSetConvolutionMathType(*d, handle_->math));
  }
  // Where TF32 is allowed each call takes the math mode its algorithm asks for; otherwise the
  // descriptors keep FMA math and only candidates without tensor ops are taken.
  const bool tensor_ops = handle_->math == CUDNN_DEFAULT_MATH;
  // Benchmarking runs every candidate on the device (cuDNN allocates its own buffers): never
  // inside a capture, where the heuristics' ranking is taken instead.
  // (The calls set their own streams: the candidates run on the constructor's.)
  EQUIVAE_CUDNN_CHECK(cudnnSetStream(h, handle_->stream));
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  const bool capturing = cudaStreamIsCapturing(handle_->stream, &capture) != cudaSuccess ||
                         capture != cudaStreamCaptureStatusNone;
  const bool find = handle_->benchmark && !capturing;
  auto set_math = [&](cudnnConvolutionDescriptor_t c, cudnnMathType_t candidate) {
    if (tensor_ops) EQUIVAE_CUDNN_CHECK(cudnnSetConvolutionMathType(c, candidate));
  };
  {
    auto perf =
        candidates<cudnnConvolutionFwdAlgoPerf_t>(cudnnGetConvolutionForwardAlgorithmMaxCount, h);
    int count = 0;
    EQUIVAE_CUDNN_CHECK(
        (find ? cudnnFindConvolutionForwardAlgorithm : cudnnGetConvolutionForwardAlgorithm_v7)(
            h, p->x, p->w, p->fwd_conv, p->y, int(perf.size()), &count, perf.data()));
    p->fwd_algo = pick(perf.data(), count, tensor_ops, "cudnnConvolutionForward",
                       [&](const cudnnConvolutionFwdAlgoPerf_t& candidate) {
                         set_math(p->fwd_conv, candidate.mathType);
                         return cudnnGetConvolutionForwardWorkspaceSize(
                                    h, p->x, p->w, p->fwd_conv, p->y, candidate.algo,
                                    &p->fwd_bytes) == CUDNN_STATUS_SUCCESS &&
                                p->fwd_bytes <= kMaxWorkspaceBytes;
                       })
                      .algo;
  }
  {
    auto perf = candidates<cudnnConvolutionBwdDataAlgoPerf_t>(
        cudnnGetConvolutionBackwardDataAlgorithmMaxCount, h);
    int count = 0;
    EQUIVAE_CUDNN_CHECK((find ? cudnnFindConvolutionBackwardDataAlgorithm
                              : cudnnGetConvolutionBackwardDataAlgorithm_v7)(
        h, p->w, p->y, p->data_conv, p->x, int(perf.size()), &count, perf.data()));
    p->data_algo = pick(perf.data(), count, tensor_ops, "cudnnConvolutionBackwardData",
                        [&](const cudnnConvolutionBwdDataAlgoPerf_t& candidate) {
                          set_math(p->data_conv, candidate.mathType);
                          return cudnnGetConvolutionBackwardDataWorkspaceSize(
                                     h, p->w, p->y, p->data_conv, p->x, candidate.algo,
                                     &p->data_bytes) == CUDNN_STATUS_SUCCESS &&
                                 p->data_bytes <= kMaxWorkspaceBytes;
                        })
                       .algo;
  }
  {
    auto perf = candidates<cudnnConvolutionBwdFilterAlgoPerf_t>(
        cudnnGetConvolutionBackwardFilterAlgorithmMaxCount, h);
    int count = 0;
    EQUIVAE_CUDNN_CHECK((find ? cudnnFindConvolutionBackwardFilterAlgorithm
                              : cudnnGetConvolutionBackwardFilterAlgorithm_v7)(
        h, p->x, p->y, p->filter_conv, p->w, int(perf.size()), &count, perf.data()));
    p->filter_algo = pick(perf.data(), count, tensor_ops, "cudnnConvolutionBackwardFilter",
                          [&](const cudnnConvolutionBwdFilterAlgoPerf_t& candidate) {
                            set_math(p->filter_conv, candidate.mathType);
                            return cudnnGetConvolutionBackwardFilterWorkspaceSize(
                                       h, p->x, p->y, p->filter_conv, p->w, candidate.algo,
                                       &p->filter_bytes) == CUDNN_STATUS_SUCCESS &&
                                   p->filter_bytes <= kMaxWorkspaceBytes;
                          })
                         .algo;
  }
  Plan& made = *plans_.emplace(key, std::move(p)).first->second;
  // cuDNN loads (and may compile) an algorithm's kernels when it first runs it: the plan's three
  // calls run once here, on zeroed scratch of this shape, so that the step's graph capture
  // records them warm (a first run inside a capture may load modules or allocate, which a
  // capture refuses). Not while capturing, where nothing may allocate.
  if (!capturing) warm_up(s, transposed, c, made.workspace());
  return made;
}

void CudnnConvolutions::warm_up(const cpu::Conv2dShape& s, bool transposed,
                                const cpu::Conv2dShape& c, size_t workspace) {
  const size_t elem = handle_->type == CUDNN_DATA_DOUBLE ? sizeof(double) : sizeof(float);
  struct Scratch {
    void* ptr = nullptr;
    // Zeroed on the calls' stream (non-blocking: a plain cudaMemset would not order before them).
    Scratch(size_t bytes, cudaStream_t stream) {
      if (cudaMalloc(&ptr, bytes) != cudaSuccess ||
          cudaMemsetAsync(ptr, 0, bytes, stream) != cudaSuccess)
        throw Error("cuda backend", "cannot allocate a convolution's warm-up scratch (" +
                                        std::to_string(bytes) + " bytes)");
    }
    ~Scratch() {
      if (ptr) cudaFree(ptr);
    }
  };
  // conv_x, conv_y, W and the workspace of the convolution c that the calls run.
  const cudaStream_t stream = handle_->stream;
  const Scratch x(size_t(c.N) * c.C_in * c.H * c.W * elem, stream),
      y(size_t(c.N) * c.C_out * cpu::conv_out_h(c, false) * cpu::conv_out_w(c, false) * elem,
        stream),
      w(size_t(c.C_out) * c.C_in * c.KH * c.KW * elem, stream),
      ws(std::max<size_t>(workspace, 256), stream);
  // Each handle runs them once: the side stream's too (what it runs first must not allocate
  // inside a capture either), after the main stream's, which zeroed the scratch.
  std::vector<cudaStream_t> streams{handle_->stream};
  if (handle_->side) streams.push_back(handle_->side_stream);
  for (const cudaStream_t on : streams) {
    forward(s, transposed, y.ptr, x.ptr, w.ptr, ws.ptr, workspace, on);
    backward_data(s, transposed, x.ptr, y.ptr, w.ptr, ws.ptr, workspace, on);
    backward_filter(s, transposed, w.ptr, x.ptr, y.ptr, ws.ptr, workspace, on);
    // The scratch is freed only after the calls ran (cudaFree would wait anyway; this says so).
    if (cudaStreamSynchronize(on) != cudaSuccess)
      throw Error("cuda backend", "a convolution's warm-up run failed on the device");
  }
}

size_t CudnnConvolutions::workspace_bytes(const cpu::Conv2dShape& s, bool transposed) {
  return plan(s, transposed).workspace();
}

namespace {
// alpha = 1, beta = 0 (overwrite) in the tensors' own precision, as cuDNN expects.
struct Scalars {
  float f1 = 1.0f, f0 = 0.0f;
  double d1 = 1.0, d0 = 0.0;
  const void* one(cudnnDataType_t t) const {
    return t == CUDNN_DATA_DOUBLE ? static_cast<const void*>(&d1) : &f1;
  }
  const void* zero(cudnnDataType_t t) const {
    return t == CUDNN_DATA_DOUBLE ? static_cast<const void*>(&d0) : &f0;
  }
};
void check_workspace(size_t given, size_t needed, const char* call) {
  check(given >= needed, "cuda backend",
        std::string(call) + ": workspace of " + std::to_string(given) + " bytes, " +
            std::to_string(needed) + " needed");
}
}  // namespace

void CudnnConvolutions::forward(const cpu::Conv2dShape& s, bool transposed, void* conv_y,
                                const void* conv_x, const void* W, void* workspace,
                                size_t workspace_bytes, cudaStream_t stream) {
  Plan& p = plan(s, transposed);
  check_workspace(workspace_bytes, p.fwd_bytes, "cudnnConvolutionForward");
  const cudnnHandle_t h = handle_->for_stream(stream);
  const Scalars k;
  EQUIVAE_CUDNN_CHECK(cudnnConvolutionForward(h, k.one(handle_->type), p.x, conv_x, p.w, W,
                                              p.fwd_conv, p.fwd_algo, workspace, workspace_bytes,
                                              k.zero(handle_->type), p.y, conv_y));
}

void CudnnConvolutions::backward_data(const cpu::Conv2dShape& s, bool transposed, void* dconv_x,
                                      const void* dconv_y, const void* W, void* workspace,
                                      size_t workspace_bytes, cudaStream_t stream) {
  Plan& p = plan(s, transposed);
  check_workspace(workspace_bytes, p.data_bytes, "cudnnConvolutionBackwardData");
  const cudnnHandle_t h = handle_->for_stream(stream);
  const Scalars k;
  EQUIVAE_CUDNN_CHECK(cudnnConvolutionBackwardData(
      h, k.one(handle_->type), p.w, W, p.y, dconv_y, p.data_conv, p.data_algo, workspace,
      workspace_bytes, k.zero(handle_->type), p.x, dconv_x));
}

void CudnnConvolutions::backward_filter(const cpu::Conv2dShape& s, bool transposed, void* dW,
                                        const void* conv_x, const void* dconv_y, void* workspace,
                                        size_t workspace_bytes, cudaStream_t stream) {
  Plan& p = plan(s, transposed);
  check_workspace(workspace_bytes, p.filter_bytes, "cudnnConvolutionBackwardFilter");
  const cudnnHandle_t h = handle_->for_stream(stream);
  const Scalars k;
  EQUIVAE_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
      h, k.one(handle_->type), p.x, conv_x, p.y, dconv_y, p.filter_conv, p.filter_algo, workspace,
      workspace_bytes, k.zero(handle_->type), p.w, dW));
}

#else  // no cuDNN in this build

struct CudnnConvolutions::Handle {};
struct CudnnConvolutions::Plan {};

namespace {
[[noreturn]] void no_cudnn() {
  throw Error("cuda backend",
              "conv2d / conv_transpose2d need cuDNN, which was not found when this build was "
              "configured (cudnn.h and libcudnn under the CUDA toolkit)");
}
}  // namespace

CudnnConvolutions::CudnnConvolutions(cudaStream_t, cudaStream_t, bool, bool, bool) {
  no_cudnn();
}
CudnnConvolutions::~CudnnConvolutions() = default;
CudnnConvolutions::Plan& CudnnConvolutions::plan(const cpu::Conv2dShape&, bool) {
  no_cudnn();
}
size_t CudnnConvolutions::workspace_bytes(const cpu::Conv2dShape&, bool) {
  no_cudnn();
}
void CudnnConvolutions::forward(const cpu::Conv2dShape&, bool, void*, const void*, const void*,
                                void*, size_t, cudaStream_t) {
  no_cudnn();
}
void CudnnConvolutions::backward_data(const cpu::Conv2dShape&, bool, void*, const void*,
                                      const void*, void*, size_t, cudaStream_t) {
  no_cudnn();
}
void CudnnConvolutions::backward_filter(const cpu::Conv2dShape&, bool, void*, const void*,
                                        const void*, void*, size_t, cudaStream_t) {
  no_cudnn();
}

#endif

}  // namespace equivae
