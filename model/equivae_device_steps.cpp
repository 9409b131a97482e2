// EquiVae<T>'s device-resident training (equivae.h): the data sets uploaded once, a window of
// steps gathered, run and measured on the device as replays of captured graphs.
#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/ops.h"
#include "model/equivae.h"
#include "model/equivae_internal.h"
#include "runtime/error.h"

namespace equivae {

template <class T>
bool EquiVae<T>::device_steps_supported() const {
  return device_ != nullptr && std::is_same_v<T, float>;
}

template <class T>
void EquiVae<T>::upload_datasets(const Dataset& labelled, const Dataset* unlabelled) {
  check(device_steps_supported(), "device steps",
        "the " + backend_.name() + " backend cannot train on the device (float on CUDA only)");
  const int D = config_.input_dim, C = config_.classes;
  check(labelled.dim == D && labelled.n > 0, labelled.source,
        "images have " + std::to_string(labelled.dim) + " pixels, the model expects " +
            std::to_string(D));
  check(
      U_ == 0 || (unlabelled && unlabelled->dim == D && unlabelled->n > 0), "device steps",
      "the semi-supervised plan needs an unlabelled set of " + std::to_string(D) + "-pixel images");
  if (!resident_) {
    resident_ = std::make_unique<Resident>(device_);
    Resident& res = *resident_;
    res.index.reserve(backend_, sizeof(int32_t) * size_t(B_ + C * U_ + U_));
    res.counters.reserve(backend_, sizeof(DeviceCounters));
    int32_t* index = static_cast<int32_t*>(res.index.ptr);
    res.layout.dst[0] = index;
    res.layout.count[0] = B_;
    res.layout.dst[1] = index + B_;
    res.layout.count[1] = C * U_;
    res.layout.dst[2] = index + B_ + C * U_;
    res.layout.count[2] = U_;
    res.layout.dst[3] = offsets_.data;
    res.layout.count[3] = R_ + 1;
    res.layout.dst[4] = members_.data;
    res.layout.count[4] = members_.cols;
    res.layout.dst[5] = inv_offsets_.data;
    res.layout.count[5] = B_ + 1;
    res.layout.dst[6] = inv_rows_.data;
    res.layout.count[6] = inv_rows_.cols;
  }
  Resident& res = *resident_;
  if (inference_)  // data sets kept for inference that read the labelled block
    std::erase_if(inference_->kept, [](const typename Inference::Kept& k) { return !k.copy; });
  bool moved = res.labelled.reserve(backend_, labelled.images.size() * sizeof(float));
  backend_.upload(res.labelled.ptr, labelled.images.data(), labelled.images.size() * sizeof(float));
  res.labelled_source = &labelled;
  res.unlabelled_source = nullptr;
  if (U_ > 0) {
    moved |= res.unlabelled.reserve(backend_, unlabelled->images.size() * sizeof(float));
    backend_.upload(res.unlabelled.ptr, unlabelled->images.data(),
                    unlabelled->images.size() * sizeof(float));
    res.unlabelled_source = unlabelled;
  }
  if (moved) device_->reset_graph();
}

template <class T>
void EquiVae<T>::device_step_ops() {
  Resident& res = *resident_;
  const int B = B_, U = U_, C = config_.classes, D = config_.input_dim;
  auto* counters = static_cast<DeviceCounters*>(res.counters.ptr);
  {
    DeviceRange<T> range(device_, "load");
    const float* labelled = static_cast<float*>(res.labelled.ptr);
    // The labelled rows (slot segment 0); with unlabelled items, each item's C expanded rows
    // (segment 1), and the classifier's rows: the labelled ones, then every item once (2).
    SlotGather<T> gathers[kMaxSlotGathers] = {{x_.data, labelled, 0, B, D}};
    if (U > 0) {
      const float* unlabelled = static_cast<float*>(res.unlabelled.ptr);
      gathers[1] = {x_.row(B), unlabelled, 1, C * U, D};
      gathers[2] = {xq_.data, labelled, 0, B, D};
      gathers[3] = {xq_.row(B), unlabelled, 2, U, D};
    }
    device_->load_step(res.layout, static_cast<int32_t*>(res.slots.ptr), counters, gathers,
                       U > 0 ? 4 : 1);
  }
  forward_ops(0, counters);
  AdamConfig adam;
  adam.lr = config_.lr;
  auto update = [&](ParamRange r, bool beside) {
    DeviceRange<T> range(device_, "optimiser");
    device_->adam_step(params_flat_ + r.offset, adam_m_.data + r.offset, adam_v_.data + r.offset,
                       grads_flat_ + r.offset, r.count, adam, counters, beside);
  };
  if (device_->early_adam()) {  // each network's update beside the backward still to come
    backward_with([&](ParamRange r) { update(r, /*beside=*/true); });
    update(param_range({&finv_}), /*beside=*/false);
  } else {
    backward();
    update({0, parameter_count_}, /*beside=*/false);
  }
  MeanSet<T> means;
  means.values[0] = ll_.data;
  means.count[0] = B;
  means.values[1] = kl_.data;
  means.count[1] = B;
  if (config_.semi_supervised()) {
    means.values[2] = nll_.data;
    means.count[2] = B;
    means.values[3] = bound_.data;
    means.count[3] = U;
  }
  device_->finish_step(static_cast<double*>(res.table.ptr), means, counters);
}

template <class T>
uint64_t EquiVae<T>::capture_graph(int graph, const std::function<void()>& issue) {
  device_->begin_capture(graph);
  try {
    issue();
  } catch (...) {
    device_->abort_capture();
    throw;
  }
  device_->end_capture();
  return device_->graph_id(graph);
}

template <class T>
void EquiVae<T>::capture_device_steps(int graph, int steps) {
  resident_->step_graph_ids[graph] = capture_graph(graph, [&] {
    for (int i = 0; i < steps; ++i) device_step_ops();
  });
}

namespace {
// How a window of `steps` device steps is replayed: `groups` replays of the graph of
// `per_graph` steps, then `singles` of the one-step graph.
struct WindowReplays {
  size_t groups = 0, singles = 0;
};
WindowReplays window_replays(size_t steps, int per_graph) {  // per_graph ≥ 1
  WindowReplays r;
  r.groups = per_graph > 1 ? steps / size_t(per_graph) : 0;
  r.singles = steps - r.groups * size_t(per_graph);
  return r;
}
}  // namespace

template <class T>
void EquiVae<T>::capture_window_graphs(size_t groups, size_t singles) {
  using Ops = DeviceStepOps<T>;
  const int per_graph = device_->steps_per_graph();
  auto missing = [&](int graph) {
    const size_t count = graph == Ops::kStepsGraph ? groups : singles;
    const uint64_t id = device_->graph_id(graph);
    return count > 0 && (id == 0 || id != resident_->step_graph_ids[graph]);
  };
  auto capture_missing = [&] {
    if (missing(Ops::kStepsGraph)) capture_device_steps(Ops::kStepsGraph, per_graph);
    if (missing(Ops::kOneStepGraph)) capture_device_steps(Ops::kOneStepGraph, 1);
  };
  if (!missing(Ops::kStepsGraph) && !missing(Ops::kOneStepGraph)) return;
  capture_missing();
  // The capture made the step's GEMM plans; with autotuning their algorithms are timed now,
  // and graphs holding older choices are captured again (the plans are kept: same nodes, new
  // kernels).
  const GemmTuning tuning = device_->tune_gemms();
  gemm_tuning_ += tuning;
  if (tuning.changed > 0) {
    device_->reset_graph();
    capture_missing();
  }
}

template <class T>
std::vector<StepMetrics> EquiVae<T>::train_steps(const std::vector<Batch>& batches,
                                                 uint64_t first_step) {
  check(device_steps_supported(), "device steps",
        "the " + backend_.name() + " backend cannot train on the device (float on CUDA only)");
  check(resident_ && resident_->labelled_source, "device steps",
        "upload_datasets must come before train_steps");
  Resident& res = *resident_;
  const Dataset& labelled = *res.labelled_source;
  const Dataset* unlabelled = res.unlabelled_source;
  const int C = config_.classes;
  const size_t n = batches.size(), slot = res.layout.ints();
  if (n == 0) return {};

  // One slot per step: rows, expanded unlabelled rows, unlabelled rows, offsets, members, and
  // the sets' transpose (offsets, rows).
  res.host_slots.assign(n * slot, 0);
  for (size_t i = 0; i < n; ++i) {
    const Batch& batch = batches[i];
    check_batch(batch, labelled, unlabelled);
    int32_t* p = res.host_slots.data() + i * slot;
    p = std::copy(batch.rows.begin(), batch.rows.end(), p);
    for (int32_t row : batch.unlabelled_rows) p = std::fill_n(p, C, row);
    p = std::copy(batch.unlabelled_rows.begin(), batch.unlabelled_rows.end(), p);
    p = std::copy(batch.offsets.begin(), batch.offsets.end(), p);
    std::copy(batch.members.begin(), batch.members.end(), p);
    p += res.layout.count[4];
    cpu::pool_transpose(batch.offsets.data(), batch.members.data(), R_, B_, p, p + B_ + 1);
  }
  bool moved = res.slots.reserve(backend_, res.host_slots.size() * sizeof(int32_t));
  moved |= res.table.reserve(backend_, n * kMetricWidth * sizeof(double));
  if (moved) device_->reset_graph();
  backend_.upload(res.slots.ptr, res.host_slots.data(), res.host_slots.size() * sizeof(int32_t));
  DeviceCounters counters;
  counters.step = first_step;
  counters.t = adam_steps_ + 1;
  counters.first_step = first_step;
  backend_.upload(res.counters.ptr, &counters, sizeof counters);

  const WindowReplays replays = window_replays(n, device_->steps_per_graph());
  capture_window_graphs(replays.groups, replays.singles);
  {  // steps_per_graph steps per replay of the grouped graph, the rest one per replay
    DeviceRange<T> range(device_, "steps");
    for (size_t i = 0; i < replays.groups; ++i) device_->replay(DeviceStepOps<T>::kStepsGraph);
    for (size_t i = 0; i < replays.singles; ++i) device_->replay(DeviceStepOps<T>::kOneStepGraph);
  }
  res.host_table.resize(n * kMetricWidth);
  backend_.download(res.host_table.data(), res.table.ptr, n * kMetricWidth * sizeof(double));
  // The record of an update gone non-finite: a copy of 32 bytes after the table's, which
  // has waited for the window already.
  const int64_t first_t = counters.t;
  backend_.download(&counters, res.counters.ptr, sizeof counters);
  adam_steps_ += int64_t(n);

  std::vector<StepMetrics> metrics(n);
  for (size_t i = 0; i < n; ++i) {
    const double* row = res.host_table.data() + i * kMetricWidth;
    metrics[i].recon = row[0];
    metrics[i].kl = row[1];
    metrics[i].classifier_nll = row[2];
    metrics[i].unlabelled_bound = row[3];
  }
  if (counters.non_finite_t != 0) {
    const int64_t i = counters.non_finite_t - first_t;
    check(i >= 0 && i < int64_t(n), "device steps",
          "Adam's non-finite record holds t = " + std::to_string(counters.non_finite_t) +
              ", outside the window's " + std::to_string(first_t) + " .. " +
              std::to_string(first_t + int64_t(n) - 1));
    metrics[size_t(i)].update_finite = false;
  }
  return metrics;
}

// The members this file defines, for both plans (equivae.cpp instantiates the class).
#define INSTANTIATE(T)                                                            \
  template bool EquiVae<T>::device_steps_supported() const;                       \
  template void EquiVae<T>::upload_datasets(const Dataset&, const Dataset*);      \
  template void EquiVae<T>::device_step_ops();                                    \
  template uint64_t EquiVae<T>::capture_graph(int, const std::function<void()>&); \
  template void EquiVae<T>::capture_device_steps(int, int);                       \
  template void EquiVae<T>::capture_window_graphs(size_t, size_t);                \
  template std::vector<StepMetrics> EquiVae<T>::train_steps(const std::vector<Batch>&, uint64_t);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae
