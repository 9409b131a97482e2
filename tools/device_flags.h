#pragma once
// The device flags the tools share (--device, --threads, and the CUDA-only switches of
// kCudaSwitches with --steps-per-graph) and the backend they select.
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/openmp_threads.h"

namespace equivae {

// The switches that change the cuda backend alone (the cpu backend names them as ignored).
inline constexpr const char* kCudaSwitches[] = {"strict-fp32",
                                                "autotune",
                                                "fused-relu-backward",
                                                "small-gemm",
                                                "conv-gemm",
                                                "no-programmatic-launch",
                                                "convolutions-in-order",
                                                "persistent-chains"};

// default_device: "auto" for the training tools, "cpu" for the inference tools; training:
// also the switches that only change a training step (--fused-relu-backward,
// --steps-per-graph, and the two that turn a measured default off), which an inference tool
// does not take.
inline void declare_device_flags(Flags& f, const std::string& default_device,
                                 bool training = true) {
  f.add("device", default_device,
        "cpu, cuda or auto (auto: cuda when this build has the CUDA backend and a GPU is "
        "present, else cpu)");
  f.add("threads", "0", "CPU threads for GEMM and OpenMP (0: all cores)");
  f.add("strict-fp32", "", "cuda: plain FP32 GEMMs (default: TF32 tensor cores allowed)", true);
  f.add("autotune", "",
        "cuda: time the candidate algorithms of each cuBLASLt GEMM and cuDNN convolution once "
        "at start-up and keep the fastest, and run each convolution call on cuDNN or lowered to "
        "GEMMs, whichever was faster (default: the libraries' heuristics)",
        true);
  f.add("small-gemm", "",
        "cuda: the engine's own tensor-core GEMM (TF32) for the forward's and the input "
        "gradients' GEMMs of up to " +
            std::to_string(CudaBackendOptions::kSmallGemmRows) +
            " rows (default: cuBLAS / cuBLASLt); with --autotune, only for the GEMMs where "
            "timing shows it faster than cuBLASLt",
        true);
  f.add("persistent-chains", "",
        "cuda: each network's consecutive dense layers as one persistent launch of the engine's "
        "tensor-core GEMM, a grid barrier between layers (TF32; not with --autotune; default: a "
        "kernel per layer)",
        true);
  f.add("conv-gemm", "",
        "cuda, the conv model: each convolution as GEMMs over many images at once between the "
        "engine's im2col / col2im kernels (default: cuDNN)",
        true);
  if (!training) return;
  f.add("fused-relu-backward", "",
        "cuda: each ReLU's mask and bias gradient in the input-gradient GEMM of the layer above "
        "(cuBLASLt DRELU_BGRAD; default: a kernel between the two GEMMs)",
        true);
  f.add("steps-per-graph", "1",
        "cuda: consecutive training steps captured in one CUDA graph and launched together (1 "
        "to " +
            std::to_string(CudaBackendOptions::kMaxStepsPerGraph) + "; the same steps)");
  f.add("no-programmatic-launch", "",
        "cuda: each of the engine's kernels launched after the one before it has finished "
        "(default on compute capability 9.0+: programmatic dependent launch, which overlaps "
        "the launch with the kernel before)",
        true);
  f.add("convolutions-in-order", "",
        "cuda, the conv model: each convolution's weight gradient and the encoder's conv trunk "
        "in order on the main stream (default: beside it, on a second stream)",
        true);
}

// More threads than the machine runs at once are allowed (up to 1024) but take turns on the
// cores, and every split GEMM waits for its last thread: said once rather than run slowly.
inline void note_threads_above_cores(int threads) {
  const unsigned cores = std::thread::hardware_concurrency();  // 0: unknown
  if (cores == 0 || threads <= int(cores)) return;
  std::fprintf(stderr,
               "note: --threads %d is more than the %u cores (hardware threads) of this machine; "
               "more threads than cores slow each training step down (--threads 0 uses every "
               "core)\n",
               threads, cores);
}

// The CUDA backend's options the flags select (a training tool's also the step's switches).
inline CudaBackendOptions cuda_options_from_flags(const Flags& f) {
  CudaBackendOptions cuda;
  cuda.strict_fp32 = f.get_switch("strict-fp32");
  cuda.autotune = f.get_switch("autotune");
  cuda.small_gemm = f.get_switch("small-gemm");
  cuda.persistent_chains = f.get_switch("persistent-chains");
  cuda.conv_gemm = f.get_switch("conv-gemm");
  if (!f.declared("steps-per-graph")) return cuda;  // an inference tool
  cuda.fused_relu_backward = f.get_switch("fused-relu-backward");
  cuda.steps_per_graph =
      int(f.get_int("steps-per-graph", 1, CudaBackendOptions::kMaxStepsPerGraph));
  if (f.get_switch("no-programmatic-launch")) cuda.programmatic_launch = false;
  if (f.get_switch("convolutions-in-order")) cuda.side_conv_filter = cuda.trunk_beside = false;
  return cuda;
}

// The backend of the device flags; says why when cuda cannot start.
inline std::unique_ptr<Backend<float>> backend_from_flags(const Flags& f) {
  std::string device = f.get("device");
  if (device == "auto") device = cuda_available() ? "cuda" : "cpu";
  check(device == "cpu" || device == "cuda", "--device",
        "expects cpu, cuda or auto, got '" + device + "'");
  const CudaBackendOptions cuda = cuda_options_from_flags(f);  // checks --steps-per-graph
  if (device == "cpu") {
    std::string ignored;  // the CUDA-only switches given: said once rather than dropped silently
    for (const char* name : kCudaSwitches)
      if (f.declared(name) && f.get_switch(name))
        ignored += std::string(ignored.empty() ? "" : ", ") + "--" + name;
    if (cuda.steps_per_graph != 1)
      ignored += std::string(ignored.empty() ? "" : ", ") + "--steps-per-graph";
    if (!ignored.empty())
      std::fprintf(stderr,
                   "note: %s only change%s the cuda backend; the cpu backend runs as it is\n",
                   ignored.c_str(), ignored.find(',') == std::string::npos ? "s" : "");
    const int threads = int(f.get_int("threads", 0, kMaxThreads));
    note_threads_above_cores(threads);
    return make_cpu_backend<float>(threads);
  }
  try {  // says why: no GPU, no driver, or a build without the CUDA backend
    return make_cuda_backend<float>(cuda);
  } catch (const Error& e) {
    throw Error("--device cuda", std::string(e.what()) + " (use --device cpu)");
  }
}

}  // namespace equivae
