// EquiVae<T>'s inference (equivae.h): the inference plan's f_inv and q(y|x) over chunks of
// images, the data sets kept resident for it, and encode_v / decode on the training plan.
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <type_traits>
#include <vector>

#include "model/equivae.h"
#include "model/equivae_internal.h"
#include "runtime/error.h"

namespace equivae {

template <class T>
typename EquiVae<T>::Inference& EquiVae<T>::inference() {
  if (inference_) return *inference_;
  // Chunks of config_.inference_chunk rows through a dense stack, at least the rows the training
  // plan runs it over (f_inv: B; q(y|x): B + U); a convolutional stack, and inference_chunk 0,
  // exactly those: the same GEMM shapes, so the same numbers, row for row. Larger chunks are not
  // exact: BLAS libraries pick their kernels (and so the order of a row's sums) by the sizes.
  auto chunk_rows = [&](const LayerStack<T>& trained) {
    return trained.convolutional() ? trained.rows()
                                   : std::max(trained.rows(), config_.inference_chunk);
  };
  auto inf = std::make_unique<Inference>();
  const NetworkLayers layers = network_layers(config_);
  inf->finv = std::make_unique<LayerStack<T>>("finv", layers.finv);
  inf->finv->place_inference(inf->arena, chunk_rows(finv_), finv_);
  std::vector<LayerStack<T>*> stacks = {inf->finv.get()};
  if (config_.semi_supervised()) {
    inf->classifier = std::make_unique<LayerStack<T>>("classifier", layers.classifier);
    inf->classifier->place_inference(inf->arena, chunk_rows(classifier_), classifier_);
    stacks.push_back(inf->classifier.get());
  }
  int rows = 0;
  for (LayerStack<T>* stack : stacks) {
    rows = std::max(rows, stack->rows());
    stack->use_blocked_layouts(backend_);
  }
  inf->arena.place(inf->x, rows, config_.input_dim);
  place_shared_workspace(inf->arena, inf->workspace, stacks, backend_, "model (inference)");
  inf->arena.allocate(backend_);
  inference_ = std::move(inf);
  return *inference_;
}

template <class T>
void EquiVae<T>::keep_resident(const Dataset& data) {
  if (!device_steps_supported()) return;  // the images are read from the host as they are
  check_image_size(data);
  if (resident_images(data)) return;
  Inference& inf = inference();
  typename Inference::Kept kept;
  kept.data = &data;
  kept.host = data.images.data();
  kept.n = data.n;
  if (resident_ && resident_->labelled_source == &data) {  // upload_datasets' copy
    kept.device = static_cast<const float*>(resident_->labelled.ptr);
  } else {
    kept.copy = std::make_unique<BackendBlock<T>>();
    kept.copy->reserve(backend_, std::max<size_t>(data.images.size() * sizeof(float), 1));
    backend_.upload(kept.copy->ptr, data.images.data(), data.images.size() * sizeof(float));
    kept.device = static_cast<const float*>(kept.copy->ptr);
  }
  inf.kept.push_back(std::move(kept));
}

template <class T>
void EquiVae<T>::forget_resident() {
  if (inference_) inference_->kept.clear();
}

template <class T>
const float* EquiVae<T>::resident_images(const Dataset& data) const {
  if (!inference_) return nullptr;
  for (const typename Inference::Kept& k : inference_->kept)
    if (k.data == &data && k.host == data.images.data() && k.n == data.n) return k.device;
  return nullptr;
}

template <class T>
void EquiVae<T>::infer_rows(LayerStack<T>& stack, const float* images, const float* device,
                            int64_t n, int width, std::vector<T>& result) {
  Inference& inf = inference();
  const int D = config_.input_dim, rows = stack.rows();
  result.resize(size_t(n) * width);
  if (n <= 0) return;
  // A convolutional stack runs all its rows, so the block holds whole chunks.
  const int64_t chunks = (n + rows - 1) / rows;
  inf.results.reserve(backend_, size_t(chunks) * rows * width * sizeof(T));
  T* results = static_cast<T*>(inf.results.ptr);
  check(width == stack.out(), stack.name(), "inference output width mismatch");
  Tensor<T>& output = stack.layers().back().y;
  // Resident images are read in place, except a short last chunk of a convolutional stack
  // (it would read past the data set's end).
  auto read_in_place = [&](int count) {
    return std::is_same_v<T, float> && device && (count == rows || !stack.convolutional());
  };
  auto run_chunks = [&] {
    for (int64_t begin = 0; begin < n; begin += rows) {
      const int count = int(std::min<int64_t>(rows, n - begin));
      const T* x = inf.x.data;
      const bool in_place = read_in_place(count);
      if constexpr (std::is_same_v<T, float>) {
        if (in_place) x = device + begin * D;
      }
      if (!in_place) {
        const float* src = images + begin * D;
        if constexpr (std::is_same_v<T, float>) {
          backend_.upload(inf.x.data, src, size_t(count) * D * sizeof(T));
        } else {
          inf.staging.resize(size_t(rows) * D);
          std::copy(src, src + size_t(count) * D, inf.staging.begin());
          backend_.upload(inf.x.data, inf.staging.data(), size_t(count) * D * sizeof(T));
        }
      }
      output.data = results + begin * width;  // this chunk's rows of the call's results
      stack.forward(backend_, x, count);
    }
  };
  // Only the last chunk can be short.
  if (device_ && read_in_place(int(n - (n - 1) / rows * rows))) {
    // Every chunk read in place: the pass is one graph, captured on first use and replayed
    // (it reads the parameters in place, so it sees every update since).
    run_inference_graph({&stack, device, n, results}, run_chunks);
  } else {
    run_chunks();
  }
  backend_.download(result.data(), results, size_t(n) * width * sizeof(T));
}

template <class T>
void EquiVae<T>::run_inference_graph(const InferenceGraphKey& key,
                                     const std::function<void()>& pass) {
  using Ops = DeviceStepOps<T>;
  Inference& inf = inference();
  int slot = -1;
  for (int i = 0; i < Ops::kInferenceGraphs; ++i)
    if (inf.graphs[i].key == key &&
        device_->graph_id(Ops::kFirstInferenceGraph + i) == inf.graphs[i].id)
      slot = i;
  if (slot < 0) {
    slot = inf.next_graph;
    inf.next_graph = (slot + 1) % Ops::kInferenceGraphs;
    inf.graphs[slot] = {};  // holds nothing until the capture ends
    inf.graphs[slot] = {key, capture_graph(Ops::kFirstInferenceGraph + slot, pass)};
  }
  device_->replay(Ops::kFirstInferenceGraph + slot);
}

template <class T>
void EquiVae<T>::embed(const float* images, int64_t n, float* out) {
  embed_rows(images, nullptr, n, out);
}

template <class T>
void EquiVae<T>::embed(const Dataset& data, float* out) {
  check_image_size(data);
  embed_rows(data.images.data(), resident_images(data), data.n, out);
}

template <class T>
int EquiVae<T>::inference_rows() {
  return inference().finv->rows();
}

template <class T>
void EquiVae<T>::embed_rows(const float* images, const float* device, int64_t n, float* out) {
  DeviceRange<T> range(device_, "eval");
  std::vector<T> rows;
  infer_rows(*inference().finv, images, device, n, config_.latent_r, rows);
  std::copy(rows.begin(), rows.end(), out);
}

template <class T>
void EquiVae<T>::encode_v(const float* images, const float* r, int64_t n, float* v_mean) {
  DeviceRange<T> range(device_, "eval");
  const int D = config_.input_dim, dr = config_.latent_r, dv = config_.latent_v;
  const bool trunk = !encoder_trunk_.empty();
  // The images go where the encoder reads them: x_, or the trunk's input (B + U rows).
  Tensor<T>& input = trunk ? trunk_input() : x_;
  const int chunk = trunk ? B_ + U_ : R_;
  std::vector<T> rows(size_t(chunk) * dr), mulv(size_t(chunk) * 2 * dv);
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int count = int(std::min<int64_t>(chunk, n - begin));
    std::copy(images + begin * D, images + (begin + count) * D, staging_.begin());
    std::copy(r + begin * dr, r + (begin + count) * dr, rows.begin());
    backend_.upload(input.data, staging_.data(), size_t(count) * D * sizeof(T));
    backend_.upload(r_.data, rows.data(), size_t(count) * dr * sizeof(T));
    const T* features = trunk ? encoder_trunk_.forward(backend_, input.data, count).data : x_.data;
    encoder_.forward_partial(backend_, features, F_, count);
    const Tensor<T>& out = encoder_.forward_rest(backend_, r_.data, F_, count);  // [count, 2 d_v]
    backend_.download(mulv.data(), out.data, size_t(count) * 2 * dv * sizeof(T));
    for (int i = 0; i < count; ++i)  // μ: the first d_v columns of each row
      std::copy(mulv.begin() + size_t(i) * 2 * dv, mulv.begin() + size_t(i) * 2 * dv + dv,
                v_mean + (begin + i) * dv);
  }
}

template <class T>
void EquiVae<T>::decode(const float* r, const float* v, int64_t n, float* pixels) {
  DeviceRange<T> range(device_, "eval");
  const int D = config_.input_dim, dr = config_.latent_r, dv = config_.latent_v;
  std::vector<T> rs(size_t(R_) * dr), vs(size_t(R_) * dv);
  for (int64_t begin = 0; begin < n; begin += R_) {
    const int count = int(std::min<int64_t>(R_, n - begin));
    std::copy(r + begin * dr, r + (begin + count) * dr, rs.begin());
    std::copy(v + begin * dv, v + (begin + count) * dv, vs.begin());
    backend_.upload(r_.data, rs.data(), size_t(count) * dr * sizeof(T));
    backend_.upload(v_.data, vs.data(), size_t(count) * dv * sizeof(T));
    decoder_.forward_partial(backend_, r_.data, dr, count);
    const Tensor<T>& out = decoder_.forward_rest(backend_, v_.data, dr, count);  // [count, D]
    backend_.download(staging_.data(), out.data, size_t(count) * D * sizeof(T));
    float* dst = pixels + begin * D;
    if (config_.gaussian()) {  // the mean μ, clamped to the pixels' range
      for (size_t i = 0; i < size_t(count) * D; ++i)
        dst[i] = float(std::clamp(staging_[i], T(0), T(1)));
    } else {  // Bernoulli mean: sigmoid, overflow-safe
      for (size_t i = 0; i < size_t(count) * D; ++i)
        dst[i] = float(staging_[i] >= 0 ? T(1) / (T(1) + std::exp(-staging_[i]))
                                        : std::exp(staging_[i]) / (T(1) + std::exp(staging_[i])));
    }
  }
}

template <class T>
void EquiVae<T>::classify(const float* images, int64_t n, int32_t* labels) {
  classify_rows(images, nullptr, n, labels);
}

template <class T>
void EquiVae<T>::classify(const Dataset& data, int32_t* labels) {
  check_image_size(data);
  classify_rows(data.images.data(), resident_images(data), data.n, labels);
}

template <class T>
void EquiVae<T>::classify_rows(const float* images, const float* device, int64_t n,
                               int32_t* labels) {
  check(config_.semi_supervised(), "classify", "the supervised model has no classifier q(y|x)");
  DeviceRange<T> range(device_, "eval");
  const int C = config_.classes;
  std::vector<T> logits;
  infer_rows(*inference().classifier, images, device, n, C, logits);
  for (int64_t i = 0; i < n; ++i) {
    const T* row = logits.data() + size_t(i) * C;
    labels[i] = int32_t(std::max_element(row, row + C) - row);
  }
}

// The members this file defines, for both plans (equivae.cpp instantiates the class).
#define INSTANTIATE(T)                                                                           \
  template typename EquiVae<T>::Inference& EquiVae<T>::inference();                              \
  template void EquiVae<T>::keep_resident(const Dataset&);                                       \
  template void EquiVae<T>::forget_resident();                                                   \
  template const float* EquiVae<T>::resident_images(const Dataset&) const;                       \
  template void EquiVae<T>::infer_rows(LayerStack<T>&, const float*, const float*, int64_t, int, \
                                       std::vector<T>&);                                         \
  template void EquiVae<T>::run_inference_graph(const InferenceGraphKey&,                        \
                                                const std::function<void()>&);                   \
  template void EquiVae<T>::embed(const float*, int64_t, float*);                                \
  template void EquiVae<T>::embed(const Dataset&, float*);                                       \
  template int EquiVae<T>::inference_rows();                                                     \
  template void EquiVae<T>::embed_rows(const float*, const float*, int64_t, float*);             \
  template void EquiVae<T>::encode_v(const float*, const float*, int64_t, float*);               \
  template void EquiVae<T>::decode(const float*, const float*, int64_t, float*);                 \
  template void EquiVae<T>::classify(const float*, int64_t, int32_t*);                           \
  template void EquiVae<T>::classify(const Dataset&, int32_t*);                                  \
  template void EquiVae<T>::classify_rows(const float*, const float*, int64_t, int32_t*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace equivae
