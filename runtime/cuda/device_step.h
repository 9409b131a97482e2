#pragma once
// Optional capabilities of a backend whose memory is a device's (the CUDA backend, real or
// emulated), for training steps that run without the host: a plan asks for them with
// dynamic_cast<DeviceStepOps<T>*>(&backend) and falls back to the plain Backend<T> ops when
// the backend has none (the CPU backend). Plain C++: no CUDA type appears here, so the model
// compiles against it anywhere.
//
// A device step reads what changes from step to step from device memory, never from kernel
// arguments, so one captured graph replays every step:
//   - DeviceCounters: the global step (Philox noise), Adam's t and the first step of the
//     uploaded window, advanced on the device at the end of each step;
//   - the step's indices (batch rows, pooling sets): a window of steps is uploaded at once,
//     and load_step copies step (step − first_step)'s slot into fixed buffers (gathering the
//     batch's rows in the same launch);
//   - metrics: finish_step writes each step's means into a [steps, kMetricWidth] table that
//     the host reads once per window, and advances the counters.
#include <cstddef>
#include <cstdint>

#include "kernels/cpu/ops.h"           // AdamConfig
#include "runtime/cuda/gemm_choice.h"  // GemmTuning

namespace equivae {

// Device-resident step counters (16-byte aligned; uploaded once per window).
struct alignas(16) DeviceCounters {
  uint64_t step = 0;        // global step of the next replay (Philox counter)
  int64_t t = 1;            // Adam's t of the next replay (≥ 1)
  uint64_t first_step = 0;  // global step of slot 0 of the uploaded window
  // Adam's record of the window's first update that left a value NaN or infinite (its t; 0:
  // none, cpu::adam_step): the later steps' updates change nothing, so the state stays as it
  // left it. Read back with the window's metrics.
  int64_t non_finite_t = 0;
};

constexpr int kMetricWidth = 4;   // doubles per step in the metric table
constexpr int kSlotSegments = 7;  // consecutive int32 segments of a step's index slot

// The segments of one step's slot, copied in order to their fixed device buffers.
struct SlotLayout {
  int32_t* dst[kSlotSegments] = {};
  int32_t count[kSlotSegments] = {};
  size_t ints() const {
    size_t n = 0;
    for (int s = 0; s < kSlotSegments; ++s) n += size_t(count[s]);
    return n;
  }
};

// One of a step's batch gathers: out[i, :] = data[index[i], :] for a float data set resident
// on the device, index[0 .. rows) being segment `segment` of the step's slot.
template <class T>
struct SlotGather {
  T* out = nullptr;
  const float* data = nullptr;
  int segment = 0, rows = 0, D = 0;
};
constexpr int kMaxSlotGathers = 4;

// Up to kMetricWidth row vectors whose means a step records (null values: recorded as 0).
template <class T>
struct MeanSet {
  const T* values[kMetricWidth] = {};
  int count[kMetricWidth] = {};
};

template <class T>
class DeviceStepOps {
 public:
  virtual ~DeviceStepOps() = default;

  // ---- ops that read per-step values from device memory
  // The step's first op: copies slot (step − first_step) of slots[steps, layout.ints()] into
  // layout's buffers and runs up to kMaxSlotGathers gathers (T = float), whose row indices
  // it reads from the same slot — one launch.
  virtual void load_step(const SlotLayout& layout, const int32_t* slots,
                         const DeviceCounters* counters, const SlotGather<T>* gathers,
                         int count) = 0;
  // sample_kl_forward with the step read from counters->step.
  virtual void sample_kl_forward(T* v, T* eps, T* kl, const T* mulv, int B, int d, uint64_t seed,
                                 const DeviceCounters* counters, uint32_t row0) = 0;
  // adam_step with t read from counters->t, recording a non-finite update in
  // counters->non_finite_t. beside: over the parameters of a network whose backward is done,
  // beside the backward still to come (a GPU: on the side stream, after everything issued so
  // far on both streams); else after every gradient of the step.
  virtual void adam_step(T* params, T* m, T* v, const T* grads, size_t n,
                         const cpu::AdamConfig& config, DeviceCounters* counters, bool beside) = 0;
  // Whether a captured step should update each network's parameters as soon as its backward
  // is done, with adam_step(…, beside = true) (CudaBackendOptions::early_adam).
  virtual bool early_adam() const = 0;
  // The step's last op: table[(step − first_step) · kMetricWidth + j] = mean of
  // set.values[j][0 .. count[j]), then step += 1, t += 1 — one launch.
  virtual void finish_step(double* table, const MeanSet<T>& set, DeviceCounters* counters) = 0;

  // ---- captured steps: ops issued between begin_capture and end_capture are recorded, not
  // run; replay runs them again, with the arguments they were issued with. A backend keeps
  // kGraphSlots graphs side by side: kOneStepGraph holds one step, kStepsGraph
  // steps_per_graph() consecutive ones (CudaBackendOptions::steps_per_graph), and the
  // kInferenceGraphs from kFirstInferenceGraph on each one inference pass over a data set kept
  // on the device (EquiVae::embed / classify: every chunk's forward in one replay).
  static constexpr int kOneStepGraph = 0, kStepsGraph = 1;
  static constexpr int kFirstInferenceGraph = 2, kInferenceGraphs = 4;
  static constexpr int kGraphSlots = kFirstInferenceGraph + kInferenceGraphs;
  virtual void begin_capture(int graph) = 0;
  virtual void end_capture() = 0;
  virtual void abort_capture() = 0;  // after an exception inside the capture
  virtual bool has_graph(int graph) const = 0;
  // A number no other capture of this backend had, for the graph now in the slot (0: none):
  // whoever captured it can tell it from a graph another caller captured there since.
  virtual uint64_t graph_id(int graph) const = 0;
  virtual void reset_graph() = 0;  // every slot's
  virtual void replay(int graph) = 0;
  virtual size_t replays(int graph) const = 0;  // of that slot since the backend began
  virtual int steps_per_graph() const = 0;
  // With GEMM autotuning on (CudaBackendOptions::autotune): times the candidate
  // algorithms of every GEMM issued since the last call and keeps each one's fastest. A
  // report with changed > 0 means a graph captured before holds older choices: capture again.
  // Outside a capture only.
  virtual GemmTuning tune_gemms() = 0;
  // With fused ReLU backward (CudaBackendOptions::fused_relu_backward): how many ReLU masks the
  // forwards' cuBLASLt epilogues keep, and how many of them an input-gradient GEMM read
  // (DRELU_BGRAD, or DRELU with drelu_alone). Where cuBLASLt had no algorithm the kernel path
  // ran instead, with the same numbers: this says which route a benchmark timed.
  struct FusedRelu {
    int masks_kept = 0, masks_read = 0;
  };
  virtual FusedRelu fused_relu() const = 0;
  // With CudaBackendOptions::small_gemm: how many distinct GEMM outputs the engine's own
  // tensor-core GEMM wrote, or, autotuned, how many GEMM plans it won (0: every GEMM ran in
  // the libraries).
  virtual int small_gemm_outputs() const = 0;
  // With CudaBackendOptions::persistent_chains: how many chains of dense forwards were issued
  // (one cooperative launch each): on a GPU a captured step's once, at its capture; under the
  // emulator, which runs a graph by calling its ops again, at every replay too.
  virtual size_t persistent_chains_run() const = 0;
  // With autotuning of the convolutions (CudaBackendOptions::autotune without conv_gemm): how
  // many convolution calls (three per shape) were timed on cuDNN and on the lowering to GEMMs,
  // and how many of them went to the lowering.
  struct ConvolutionRoutes {
    int timed = 0, lowered = 0;
  };
  virtual ConvolutionRoutes convolution_routes() const = 0;
  // Waits until everything issued so far has run.
  virtual void synchronize() = 0;

  // ---- a stretch of ops beside the main stream (CudaBackendOptions::trunk_beside): ops
  // issued between begin_beside and end_beside run on the side stream, after everything issued
  // so far, beside what the main stream does next; whatever reads their results later joins
  // the side stream first (an accumulating dense_forward, dense_forward_partial, Adam, a
  // download, the end of a capture). Convolutions and pooling only (another op there is an
  // error). begin_beside returns false, and the ops run in order as usual, where the option
  // is off.
  virtual bool begin_beside() = 0;
  virtual void end_beside() = 0;

  // ---- profiler ranges (NVTX on a GPU build; nothing under the emulator)
  virtual void push_range(const char* name) = 0;
  virtual void pop_range() = 0;
};

// A scoped stretch of ops beside the main stream (begin_beside … end_beside) on a backend that
// may have none.
template <class T>
class DeviceBeside {
 public:
  explicit DeviceBeside(DeviceStepOps<T>* ops) : ops_(ops && ops->begin_beside() ? ops : nullptr) {}
  ~DeviceBeside() {
    if (ops_) ops_->end_beside();
  }
  DeviceBeside(const DeviceBeside&) = delete;
  DeviceBeside& operator=(const DeviceBeside&) = delete;

 private:
  DeviceStepOps<T>* ops_;
};

// A scoped profiler range on a backend that may have none.
template <class T>
class DeviceRange {
 public:
  DeviceRange(DeviceStepOps<T>* ops, const char* name) : ops_(ops) {
    if (ops_) ops_->push_range(name);
  }
  ~DeviceRange() {
    if (ops_) ops_->pop_range();
  }
  DeviceRange(const DeviceRange&) = delete;
  DeviceRange& operator=(const DeviceRange&) = delete;

 private:
  DeviceStepOps<T>* ops_;
};

}  // namespace equivae
