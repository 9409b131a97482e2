// EquiVae<T>'s checkpoints (equivae.h): its parameters and Adam state written as named
// tensors, and read back after checking the format, configuration, shapes and values.
#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "model/equivae.h"
#include "runtime/build_info.h"
#include "runtime/error.h"

namespace equivae {

template <class T>
void EquiVae<T>::read_state(std::span<float> state) const {
  // Three downloads (parameters, Adam's m and v: one host sync each on a GPU).
  const size_t n = parameter_count_;
  check(state.size() == state_size(), "model",
        "read_state needs room for exactly " + std::to_string(state_size()) +
            " floats (parameters, Adam's m and v), got " + std::to_string(state.size()));
  for (const auto& [region, src] :
       {std::pair{0, params_flat_}, std::pair{1, adam_m_.data}, std::pair{2, adam_v_.data}}) {
    float* dst = state.data() + size_t(region) * n;
    if constexpr (std::is_same_v<T, float>) {
      backend_.download(dst, src, n * sizeof(T));
    } else {
      std::vector<T> host(n);
      backend_.download(host.data(), src, n * sizeof(T));
      std::copy(host.begin(), host.end(), dst);
    }
  }
}

template <class T>
void EquiVae<T>::read_state(std::vector<float>& state) const {
  state.resize(state_size());
  read_state(std::span<float>(state));
}

template <class T>
typename EquiVae<T>::CheckpointLayout EquiVae<T>::checkpoint_layout() const {
  CheckpointLayout layout;
  Checkpoint& ckpt = layout.shell;
  for (const NamedParameter<T>& p : named_parameters()) {
    const size_t offset = size_t(p.value - params_flat_);
    check(p.value >= params_flat_ && offset + p.size <= parameter_count_, "model",
          "parameter " + p.name + " lies outside the parameter region");
    ckpt.tensors.push_back({p.name, p.shape, {}});
    layout.offsets.push_back(offset);
  }
  for (const auto& [name, region] : {std::pair{"adam.m", 1}, std::pair{"adam.v", 2}}) {
    ckpt.tensors.push_back({name, {int64_t(parameter_count_)}, {}});
    layout.offsets.push_back(size_t(region) * parameter_count_);
  }
  ckpt.metadata["format"] = kCheckpointFormat;
  ckpt.metadata["config"] = config_.describe();
  // The dense model's line has no geometry: the shape of its images goes beside it.
  if (config_.image_shape_known())
    ckpt.metadata["image_shape"] = shape_text(config_.channels, config_.height, config_.width);
  ckpt.metadata["adam_steps"] = std::to_string(adam_steps_);
  ckpt.metadata["weight_layout"] =
      config_.convolutional() ? "dense [in, out]: y = x . weight + bias; conv2d [out, in, kh, kw] "
                                "and conv_transpose2d [in, out, kh, kw] as PyTorch's"
                              : "[in, out]: y = x . weight + bias";
  // What wrote it (not part of a run's identity: a newer build or another device resumes it).
  ckpt.metadata["engine.version"] = engine_version();
  ckpt.metadata["engine.backend"] = backend_.describe();
  return layout;
}

template <class T>
Checkpoint EquiVae<T>::fill_checkpoint(CheckpointLayout layout, std::span<const float> state) {
  Checkpoint ckpt = std::move(layout.shell);
  for (size_t i = 0; i < ckpt.tensors.size(); ++i) {
    NamedTensor& t = ckpt.tensors[i];
    size_t count = 1;
    for (const int64_t extent : t.shape) count *= size_t(extent);
    const size_t offset = layout.offsets.at(i);
    check(offset <= state.size() && count <= state.size() - offset, t.name,
          "lies outside the state read back (" + std::to_string(state.size()) + " values)");
    t.data.assign(state.begin() + std::ptrdiff_t(offset),
                  state.begin() + std::ptrdiff_t(offset + count));
  }
  return ckpt;
}

template <class T>
Checkpoint EquiVae<T>::to_checkpoint() const {
  std::vector<float> state;
  read_state(state);
  return fill_checkpoint(checkpoint_layout(), state);
}

namespace {

const NamedTensor& checkpoint_tensor(const Checkpoint& ckpt, const std::string& path,
                                     const std::string& name) {
  for (const NamedTensor& t : ckpt.tensors)
    if (t.name == name) return t;
  const bool moment = name.rfind("adam.", 0) == 0;
  throw Error(path, "tensor " + name + " is missing (the checkpoint holds " +
                        std::to_string(ckpt.tensors.size()) + " tensors)" +
                        (moment ? ": resuming needs Adam's moments, which figures, embed and "
                                  "classify do not read"
                                : ""));
}

// "element i of n = value" for the first NaN or infinity, else empty.
std::string first_non_finite_element(const std::vector<float>& data) {
  const auto bad =
      std::find_if(data.begin(), data.end(), [](float v) { return !std::isfinite(v); });
  if (bad == data.end()) return {};
  const double value = *bad;
  return "element " + std::to_string(bad - data.begin()) + " of " + std::to_string(data.size()) +
         " = " +
         (std::isnan(value) ? "nan"
          : value > 0       ? "inf"
                            : "-inf");
}

// One tensor of the checkpoint into backend memory, once its name, shape and values check.
template <class T>
void restore_tensor(Backend<T>& backend, const Checkpoint& ckpt, const std::string& path,
                    const std::string& name, const std::vector<int64_t>& shape, T* dst, size_t n) {
  const NamedTensor& t = checkpoint_tensor(ckpt, path, name);
  // The shape, not only the count: a weight stored [out, in] (PyTorch's nn.Linear) holds as
  // many values as our [in, out] and would load as a silently transposed layer.
  check(t.shape == shape && t.data.size() == n, path,
        "tensor " + name + " has shape " + shape_text(t.shape) + ", the model's is " +
            shape_text(shape) + " (dense weights are stored [in, out])");
  // A NaN or an infinity would flow into every output (an all-NaN embedding, one class for
  // every image) without an error: the file is refused instead.
  const std::string bad = first_non_finite_element(t.data);
  check(bad.empty(), path,
        "tensor " + name + " holds a non-finite value (" + bad + "): the checkpoint is damaged");
  std::vector<T> host(t.data.begin(), t.data.end());
  backend.upload(dst, host.data(), n * sizeof(T));
}

}  // namespace

void check_checkpoint_format(const Checkpoint& ckpt, const std::string& path) {
  auto it = ckpt.metadata.find("format");
  if (it == ckpt.metadata.end()) return;
  check(it->second == kCheckpointFormat, path,
        "checkpoint format '" + it->second + "' is not one this build reads (it reads " +
            kCheckpointFormat + "): written by a newer build, or not an EquiVAE checkpoint");
}

template <class T>
void EquiVae<T>::load_weights(const Checkpoint& ckpt, const std::string& path) {
  check_checkpoint_format(ckpt, path);
  auto it = ckpt.metadata.find("config");
  check(it != ckpt.metadata.end(), path, "not an EquiVAE checkpoint (no config in its metadata)");
  check(it->second == config_.describe(), path,
        "was trained with a different configuration:\n  checkpoint: " + it->second +
            "\n  requested:  " + config_.describe());
  for (const NamedParameter<T>& p : named_parameters())
    restore_tensor(backend_, ckpt, path, p.name, p.shape, p.value, p.size);
}

template <class T>
void EquiVae<T>::load_checkpoint(const Checkpoint& ckpt, const std::string& path) {
  load_weights(ckpt, path);
  const std::vector<int64_t> moments{int64_t(parameter_count_)};
  restore_tensor(backend_, ckpt, path, "adam.m", moments, adam_m_.data, parameter_count_);
  restore_tensor(backend_, ckpt, path, "adam.v", moments, adam_v_.data, parameter_count_);
  // Files written by other tools may lack it (inference needs no Adam state); a resume checks
  // it against the run's step count.
  adam_steps_ = 0;
  if (auto steps = ckpt.metadata.find("adam_steps"); steps != ckpt.metadata.end()) {
    const std::string& text = steps->second;
    uint64_t value = 0;
    const auto r = std::from_chars(text.data(), text.data() + text.size(), value);
    check(r.ec == std::errc() && r.ptr == text.data() + text.size() && !text.empty() &&
              value <= uint64_t(INT64_MAX),
          path, "metadata \"adam_steps\" is not a non-negative integer: '" + text + "'");
    adam_steps_ = int64_t(value);
  }
}

// The members this file defines, for both plans (equivae.cpp instantiates the class).
#define INSTANTIATE(T)                                                                       \
  template Checkpoint EquiVae<T>::to_checkpoint() const;                                     \
  template void EquiVae<T>::read_state(std::span<float>) const;                              \
  template void EquiVae<T>::read_state(std::vector<float>&) const;                           \
  template typename EquiVae<T>::CheckpointLayout EquiVae<T>::checkpoint_layout() const;      \
  template Checkpoint EquiVae<T>::fill_checkpoint(CheckpointLayout, std::span<const float>); \
  template void EquiVae<T>::load_weights(const Checkpoint&, const std::string&);             \
  template void EquiVae<T>::load_checkpoint(const Checkpoint&, const std::string&);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae
