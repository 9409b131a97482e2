#pragma once
// Private to model/equivae*.cpp: the state EquiVae<T>'s training, device-step and inference
// files share (equivae.h declares Resident and Inference, this header defines them).
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/equivae.h"

namespace equivae {

// A block of backend memory, released with the block.
template <class T>
struct BackendBlock {
  Backend<T>* backend = nullptr;
  void* ptr = nullptr;
  size_t bytes = 0;
  BackendBlock() = default;
  BackendBlock(const BackendBlock&) = delete;
  BackendBlock& operator=(const BackendBlock&) = delete;
  ~BackendBlock() {
    if (ptr) backend->release(ptr);
  }
  // Makes room for n bytes; true when the block moved.
  bool reserve(Backend<T>& be, size_t n) {
    if (ptr && n <= bytes) return false;
    if (ptr) backend->release(ptr);
    ptr = nullptr;
    backend = &be;
    ptr = be.allocate(n);
    bytes = n;
    return true;
  }
};

// Device-resident training state: the uploaded data sets, the fixed index buffers a step's
// slot is copied into, a window of slots, the metric table and the step counters, each one
// block of backend memory. The captured graph bakes these pointers in: whenever one moves,
// the graph is dropped and captured again on the next window.
template <class T>
struct EquiVae<T>::Resident {
  using Block = BackendBlock<T>;
  explicit Resident(DeviceStepOps<T>* device) : ops(device) {}
  ~Resident() { ops->reset_graph(); }  // before the blocks it points into go

  DeviceStepOps<T>* ops;
  Block labelled, unlabelled, index, slots, table, counters;
  const Dataset* labelled_source = nullptr;
  const Dataset* unlabelled_source = nullptr;
  SlotLayout layout;  // rows [B], expanded unlabelled rows [C·U], unlabelled rows [U],
                      // pooling offsets [R + 1], pooling members [capacity]
  std::vector<int32_t> host_slots;
  std::vector<double> host_table;
  // The backend's graph_id of this model's captures of the step graphs (kOneStepGraph,
  // kStepsGraph): a slot that holds another graph since (reset_graph, or another model's
  // capture on the same backend) is captured again, never replayed.
  uint64_t step_graph_ids[2] = {0, 0};
};

// The inference plan (equivae.h): copies of f_inv and q(y|x) at the rows the training plan
// runs them over, reading its parameters; one input chunk x, a convolution workspace, and the
// block the results of a call collect in. Each stack's last layer writes straight into that
// block (its output view moves along it chunk by chunk), so a call downloads once.
template <class T>
struct EquiVae<T>::Inference {
  std::unique_ptr<LayerStack<T>> finv, classifier;  // the classifier: semi-supervised only
  Arena arena;
  Tensor<T> x;              // [rows, input_dim] a chunk of images uploaded from the host
  Tensor<T> workspace;      // convolution scratch of the larger stack
  BackendBlock<T> results;  // [chunks · rows, width] the outputs of one call
  std::vector<T> staging;   // host [rows, input_dim] (double plans: the converted chunk)
  // Data sets kept on the device (keep_resident): their own copy, or upload_datasets' one.
  struct Kept {
    const Dataset* data = nullptr;
    const float* host = nullptr;  // data->images.data() and data->n when kept: a set whose
    int64_t n = 0;                //   images moved or resized is read from the host instead
    const float* device = nullptr;
    std::unique_ptr<BackendBlock<T>> copy;
  };
  std::vector<Kept> kept;
  // The passes captured as graphs (DeviceStepOps' inference slots, in order): a pass whose key
  // matches no slot (another set, a moved results block), or whose slot now holds another
  // graph (the backend's reset_graph — a training window's blocks moving, autotuning's
  // recapture — or another model's capture on the same backend), is captured again. Slots are
  // reused round robin; more than kInferenceGraphs passes in turn would capture each time.
  InferenceGraph graphs[DeviceStepOps<T>::kInferenceGraphs];
  int next_graph = 0;
};

}  // namespace equivae
