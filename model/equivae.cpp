#include "model/equivae.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "kernels/philox.h"
#include "runtime/error.h"

namespace equivae {
namespace {
constexpr uint64_t kInitSalt = 0x1717'0000'0000'0000ull;  // parameter-init Philox stream
}

template <class T>
EquiVae<T>::EquiVae(const EquiVaeConfig& config, Backend<T>& backend)
    : config_(config),
      backend_(backend),
      B_(config.batch()),
      finv_("finv", {config.input_dim, config.hidden, config.hidden, config.latent_r}),
      encoder_("encoder",
               {config.input_dim + config.latent_r, config.hidden, config.hidden,
                2 * config.latent_v}),
      decoder_("decoder",
               {config.latent_r + config.latent_v, config.hidden, config.hidden, config.input_dim}) {
  config_.validate();
  const int D = config.input_dim, dr = config.latent_r, dv = config.latent_v, B = B_;

  // Parameters, then gradients in the same order: two regions with one layout.
  const size_t params_begin = arena_.reserved_bytes();
  for (Mlp<T>* net : {&finv_, &encoder_, &decoder_}) net->place_parameters(arena_);
  const size_t params_bytes = arena_.reserved_bytes() - params_begin;
  for (Mlp<T>* net : {&finv_, &encoder_, &decoder_}) net->place_gradients(arena_);
  parameter_count_ = params_bytes / sizeof(T);  // includes alignment padding (kept at zero)
  arena_.place(adam_m_, 1, int(parameter_count_));
  arena_.place(adam_v_, 1, int(parameter_count_));

  for (Mlp<T>* net : {&finv_, &encoder_, &decoder_}) net->place_activations(arena_, B);
  arena_.place(x_, B, D);
  arena_.place(offsets_, 1, B + 1);
  arena_.place(members_, 1, B * (config.k - 1));
  arena_.place(r_, B, dr);
  arena_.place(dr_, B, dr);
  arena_.place(de_, B, dr);
  arena_.place(xr_, B, D + dr);
  arena_.place(v_, B, dv);
  arena_.place(eps_, B, dv);
  arena_.place(dv_, B, dv);
  arena_.place(kl_, 1, B);
  arena_.place(ll_, 1, B);
  arena_.place(dkl_, 1, B);
  arena_.place(dll_, 1, B);
  arena_.place(rv_, B, dr + dv);
  arena_.place(drv_, B, dr + dv);
  arena_.allocate(backend_);

  params_flat_ = finv_.layers().front().W.data;
  grads_flat_ = finv_.layers().front().dW.data;
  // loss = −(1/B) Σ (ll_i − kl_i): constant per-row weights, set once.
  backend_.fill(dll_.data, T(-1) / T(B), B);
  backend_.fill(dkl_.data, T(1) / T(B), B);
  staging_.resize(size_t(B) * D);
  metric_rows_.resize(B);
  initialise_parameters();
}

template <class T>
std::vector<DenseLayer<T>*> EquiVae<T>::all_layers() {
  std::vector<DenseLayer<T>*> layers;
  for (Mlp<T>* net : {&finv_, &encoder_, &decoder_})
    for (auto& l : net->layers()) layers.push_back(&l);
  return layers;
}

template <class T>
void EquiVae<T>::initialise_parameters() {
  // PyTorch's nn.Linear default: W and b ~ U(−1/√in, 1/√in). Drawn in double from
  // Philox (seed, layer, row, col) so float and double plans start identical.
  uint64_t layer_index = 0;
  for (DenseLayer<T>* l : all_layers()) {
    const double bound = 1.0 / std::sqrt(double(l->in));
    std::vector<T> w(l->W.size()), b(l->b.size());
    const uint64_t seed = config_.seed ^ kInitSalt;
    for (int i = 0; i < l->in; ++i)
      for (int j = 0; j < l->out; ++j)
        w[size_t(i) * l->out + j] =
            T(bound * (2 * philox_uniform<double>(seed, layer_index, i, j) - 1));
    for (int j = 0; j < l->out; ++j)
      b[j] = T(bound * (2 * philox_uniform<double>(seed, layer_index, l->in, j) - 1));
    backend_.upload(l->W.data, w.data(), w.size() * sizeof(T));
    backend_.upload(l->b.data, b.data(), b.size() * sizeof(T));
    ++layer_index;
  }
}

template <class T>
void EquiVae<T>::load_batch(const Batch& batch, const Dataset& data) {
  const int D = config_.input_dim;
  check(int(batch.rows.size()) == B_, "batch",
        "has " + std::to_string(batch.rows.size()) + " rows, the plan expects " +
            std::to_string(B_));
  check(data.dim == D, data.source,
        "images have " + std::to_string(data.dim) + " pixels, the model expects " +
            std::to_string(D));
  check(int(batch.members.size()) <= members_.cols, "batch", "more pooling members than planned");
  for (int i = 0; i < B_; ++i) {
    const float* src = data.image(batch.rows[i]);
    std::copy(src, src + D, staging_.begin() + size_t(i) * D);
  }
  backend_.upload(x_.data, staging_.data(), staging_.size() * sizeof(T));
  backend_.upload(offsets_.data, batch.offsets.data(), batch.offsets.size() * sizeof(int32_t));
  backend_.upload(members_.data, batch.members.data(), batch.members.size() * sizeof(int32_t));
}

template <class T>
StepMetrics EquiVae<T>::forward(uint64_t step) {
  Backend<T>& be = backend_;
  const int B = B_, D = config_.input_dim, dr = config_.latent_r, dv = config_.latent_v;
  const Tensor<T>& e = finv_.forward(be, x_.data, B);  // [B, d_r]
  be.pool_forward(r_.data, e.data, offsets_.data, members_.data, B, dr);
  be.concat_forward(xr_.data, x_.data, r_.data, B, D, dr);
  const Tensor<T>& mulv = encoder_.forward(be, xr_.data, B);  // [B, 2 d_v]
  be.sample_kl_forward(v_.data, eps_.data, kl_.data, mulv.data, B, dv, config_.seed, step, 0);
  be.concat_forward(rv_.data, r_.data, v_.data, B, dr, dv);
  const Tensor<T>& logits = decoder_.forward(be, rv_.data, B);  // [B, D]
  be.bernoulli_ll_forward(ll_.data, logits.data, x_.data, B, D);

  StepMetrics metrics;
  be.download(metric_rows_.data(), ll_.data, B * sizeof(T));
  for (T value : metric_rows_) metrics.recon += double(value);
  be.download(metric_rows_.data(), kl_.data, B * sizeof(T));
  for (T value : metric_rows_) metrics.kl += double(value);
  metrics.recon /= B;
  metrics.kl /= B;
  return metrics;
}

template <class T>
void EquiVae<T>::backward() {
  Backend<T>& be = backend_;
  const int B = B_, D = config_.input_dim, dr = config_.latent_r, dv = config_.latent_v;
  be.bernoulli_ll_backward(decoder_.output_grad().data, dll_.data, decoder_.output().data, x_.data,
                           B, D);
  decoder_.backward(be, rv_.data, B, drv_.data, 0, false);
  be.concat_backward(dr_.data, dv_.data, drv_.data, B, dr, dv, false, false);
  be.sample_kl_backward(encoder_.output_grad().data, dv_.data, dkl_.data, encoder_.output().data,
                        eps_.data, B, dv);
  // The encoder sees [x ; r]: only r's columns need a gradient, added to the decoder's.
  encoder_.backward(be, xr_.data, B, dr_.data, D, true);
  be.pool_backward(finv_.output_grad().data, dr_.data, offsets_.data, members_.data, B, B, dr);
  finv_.backward(be, x_.data, B, nullptr, 0, false);
}

template <class T>
void EquiVae<T>::apply_adam() {
  AdamConfig adam;
  adam.lr = config_.lr;
  backend_.adam_step(params_flat_, adam_m_.data, adam_v_.data, grads_flat_, parameter_count_, adam,
                     ++adam_steps_);
}

template <class T>
StepMetrics EquiVae<T>::train_step(const Batch& batch, const Dataset& data, uint64_t step) {
  load_batch(batch, data);
  const StepMetrics metrics = forward(step);
  backward();
  apply_adam();
  return metrics;
}

template <class T>
void EquiVae<T>::embed(const float* images, int64_t n, float* out) {
  const int D = config_.input_dim, dr = config_.latent_r;
  std::vector<T> rows(size_t(B_) * dr);
  for (int64_t begin = 0; begin < n; begin += B_) {
    const int count = int(std::min<int64_t>(B_, n - begin));
    std::copy(images + begin * D, images + (begin + count) * D, staging_.begin());
    backend_.upload(x_.data, staging_.data(), size_t(count) * D * sizeof(T));
    const Tensor<T>& e = finv_.forward(backend_, x_.data, count);
    backend_.download(rows.data(), e.data, size_t(count) * dr * sizeof(T));
    std::copy(rows.begin(), rows.begin() + size_t(count) * dr, out + begin * dr);
  }
}

template <class T>
Checkpoint EquiVae<T>::to_checkpoint() const {
  Checkpoint ckpt;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const T* src, size_t n) {
    std::vector<T> host(n);
    backend_.download(host.data(), src, n * sizeof(T));
    ckpt.tensors.push_back({name, std::move(shape), std::vector<float>(host.begin(), host.end())});
  };
  for (const Mlp<T>* net : {&finv_, &encoder_, &decoder_}) {
    for (size_t l = 0; l < net->layers().size(); ++l) {
      const DenseLayer<T>& layer = net->layers()[l];
      const std::string prefix = net->name() + "." + std::to_string(l);
      add(prefix + ".weight", {layer.in, layer.out}, layer.W.data, layer.W.size());
      add(prefix + ".bias", {layer.out}, layer.b.data, layer.b.size());
    }
  }
  add("adam.m", {int64_t(parameter_count_)}, adam_m_.data, parameter_count_);
  add("adam.v", {int64_t(parameter_count_)}, adam_v_.data, parameter_count_);
  ckpt.metadata["format"] = "equivae-checkpoint-1";
  ckpt.metadata["config"] = config_.describe();
  ckpt.metadata["adam_steps"] = std::to_string(adam_steps_);
  ckpt.metadata["weight_layout"] = "[in, out]: y = x . weight + bias";
  return ckpt;
}

template <class T>
void EquiVae<T>::load_checkpoint(const Checkpoint& ckpt, const std::string& path) {
  auto it = ckpt.metadata.find("config");
  check(it != ckpt.metadata.end(), path, "not an EquiVAE checkpoint (no config in its metadata)");
  check(it->second == config_.describe(), path,
        "was trained with a different configuration:\n  checkpoint: " + it->second +
            "\n  requested:  " + config_.describe());
  auto restore = [&](const std::string& name, T* dst, size_t n) {
    const NamedTensor& t = ckpt.get(name);
    check(t.data.size() == n, path,
          "tensor " + name + " holds " + std::to_string(t.data.size()) + " values, expected " +
              std::to_string(n));
    std::vector<T> host(t.data.begin(), t.data.end());
    backend_.upload(dst, host.data(), n * sizeof(T));
  };
  for (Mlp<T>* net : {&finv_, &encoder_, &decoder_}) {
    for (size_t l = 0; l < net->layers().size(); ++l) {
      DenseLayer<T>& layer = net->layers()[l];
      const std::string prefix = net->name() + "." + std::to_string(l);
      restore(prefix + ".weight", layer.W.data, layer.W.size());
      restore(prefix + ".bias", layer.b.data, layer.b.size());
    }
  }
  restore("adam.m", adam_m_.data, parameter_count_);
  restore("adam.v", adam_v_.data, parameter_count_);
  auto steps = ckpt.metadata.find("adam_steps");
  adam_steps_ = steps == ckpt.metadata.end() ? 0 : std::stoll(steps->second);
}

template class EquiVae<float>;
template class EquiVae<double>;

}  // namespace equivae
