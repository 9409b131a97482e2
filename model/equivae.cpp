// EquiVae<T>'s training plan (equivae.h): the tensors placed in one arena, the parameters and
// their initialisation, batch loading, the forward and backward ops, Adam and the training step.
#include "model/equivae.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "model/equivae_internal.h"
#include "runtime/error.h"

namespace equivae {
namespace {
constexpr uint64_t kInitSalt = 0x1717'0000'0000'0000ull;  // parameter-init Philox stream
}  // namespace

template <class T>
EquiVae<T>::EquiVae(const EquiVaeConfig& config, Backend<T>& backend)
    : EquiVae(config, backend, network_layers(config)) {}

template <class T>
EquiVae<T>::EquiVae(const EquiVaeConfig& config, Backend<T>& backend, const NetworkLayers& layers)
    : config_(config),
      backend_(backend),
      B_(config.batch()),
      U_(config.unlabelled),
      R_(config.rows()),
      F_(layers.encoder_features),
      finv_("finv", layers.finv),
      encoder_trunk_("encoder", layers.encoder_trunk, 0, /*final_relu=*/true),
      encoder_("encoder", layers.encoder_head, int(layers.encoder_trunk.size())),
      decoder_("decoder", layers.decoder),
      classifier_("classifier", layers.classifier) {
  config_.validate();
  device_ = dynamic_cast<DeviceStepOps<T>*>(&backend);
  const int D = config.input_dim, dr = config.latent_r, dv = config.latent_v, C = config.classes;
  const int B = B_, R = R_, U = U_;
  networks_ = {&finv_, &encoder_trunk_, &encoder_, &decoder_};
  if (config.semi_supervised()) networks_.push_back(&classifier_);

  // Parameters, then gradients in the same order: two regions with one layout.
  const size_t params_begin = arena_.reserved_bytes();
  for (LayerStack<T>* net : networks_) net->place_parameters(arena_);
  if (config.gaussian()) arena_.place(logvar_, 1, config.channels);
  const size_t params_bytes = arena_.reserved_bytes() - params_begin;
  for (LayerStack<T>* net : networks_) net->place_gradients(arena_);
  if (config.gaussian()) arena_.place(dlogvar_, 1, config.channels);
  parameter_count_ = params_bytes / sizeof(T);  // includes alignment padding (kept at zero)
  arena_.place(adam_m_, 1, int(parameter_count_));
  arena_.place(adam_v_, 1, int(parameter_count_));
  arena_.place(adam_non_finite_t_, 1, 1);

  // f_inv sees the B labelled rows; encoder and decoder all R rows, an encoder trunk each of
  // the B + U items once.
  finv_.place_activations(arena_, B);
  encoder_trunk_.place_activations(arena_, B + U);
  encoder_.place_activations(arena_, R);
  decoder_.place_activations(arena_, R);
  if (config.semi_supervised()) classifier_.place_activations(arena_, B + U);
  for (LayerStack<T>* net : networks_) {
    net->place_relu_masks(arena_, backend_);
    net->use_blocked_layouts(backend_);
  }
  // One convolution workspace, the largest any layer asks for.
  place_shared_workspace(arena_, workspace_, networks_, backend_, "model");
  arena_.place(x_, R, D);
  arena_.place(offsets_, 1, R + 1);
  // A labelled row pools at most min(m_max, k − 1) others, an unlabelled row min(m_max, k).
  arena_.place(members_, 1,
               B * std::min(config.m_max, config.k - 1) + C * U * std::min(config.m_max, config.k));
  arena_.place(inv_offsets_, 1, B + 1);
  arena_.place(inv_rows_, 1, members_.cols);
  arena_.place(r_, R, dr);
  arena_.place(dr_, R, dr);
  arena_.place(v_, R, dv);
  arena_.place(eps_, R, dv);
  arena_.place(dv_, R, dv);
  arena_.place(kl_, 1, R);
  arena_.place(ll_, 1, R);
  arena_.place(dkl_, 1, R);
  arena_.place(dll_, 1, R);
  if (U > 0) {
    const int H = layers.encoder_head.front().out;  // the head's first layer
    arena_.place(expand_offsets_, 1, R + 1);
    arena_.place(expand_members_, 1, R);
    arena_.place(expand_inv_offsets_, 1, B + U + 1);
    arena_.place(expand_inv_rows_, 1, R);
    arena_.place(shared_product_, B + U, H);
    arena_.place(shared_dproduct_, B + U, H);
  }
  if (config.semi_supervised()) {
    arena_.place(xq_, B + U, D);
    arena_.place(labels_, 1, B);
    arena_.place(log_prior_, 1, C);
    arena_.place(nll_, 1, B);
    arena_.place(probs_, B, C);
    arena_.place(dnll_, 1, B);
    arena_.place(bound_, 1, U);
    arena_.place(q_, U, C);
    arena_.place(dbound_, 1, U);
  }
  arena_.allocate(backend_);

  params_flat_ = finv_.layers().front().W.data;
  grads_flat_ = finv_.layers().front().dW.data;
  // Labelled rows: loss = −(1/B) Σ (ll_i − kl_i) [− (1/B) Σ log q(y_i|x_i)]; constant
  // weights, set once. The unlabelled rows' weights come from the expectation each step.
  backend_.fill(dll_.data, T(-1) / T(B), B);
  backend_.fill(dkl_.data, T(1) / T(B), B);
  if (config.semi_supervised()) {
    backend_.fill(dnll_.data, T(config.classifier_weight) / T(B), B);
    backend_.fill(dbound_.data, T(-config.unlabelled_weight) / T(U), U);
    std::vector<int32_t> labels(B);
    for (int i = 0; i < B; ++i) labels[i] = i / config.k;
    backend_.upload(labels_.data, labels.data(), B * sizeof(int32_t));
    set_log_prior(std::vector<double>(C, -std::log(double(C))));
  }
  if (U > 0) {
    // Row i < B is item i; row B + u·C + y is unlabelled item B + u. Constant for the plan.
    std::vector<int32_t> offsets(size_t(R) + 1), members(R), inverse(size_t(B + U) + 1 + R);
    for (int i = 0; i <= R; ++i) offsets[i] = i;
    for (int i = 0; i < R; ++i) members[i] = i < B ? i : B + (i - B) / C;
    cpu::pool_transpose(offsets.data(), members.data(), R, B + U, inverse.data(),
                        inverse.data() + B + U + 1);
    backend_.upload(expand_offsets_.data, offsets.data(), offsets.size() * sizeof(int32_t));
    backend_.upload(expand_members_.data, members.data(), members.size() * sizeof(int32_t));
    backend_.upload(expand_inv_offsets_.data, inverse.data(), size_t(B + U + 1) * sizeof(int32_t));
    backend_.upload(expand_inv_rows_.data, inverse.data() + B + U + 1, size_t(R) * sizeof(int32_t));
    shared_rows_ = {B + U,
                    expand_offsets_.data,
                    expand_members_.data,
                    expand_inv_offsets_.data,
                    expand_inv_rows_.data,
                    shared_product_.data,
                    shared_dproduct_.data};
  }
  staging_.resize(size_t(R) * D);
  metric_rows_.resize(std::max(R, B + U));
  initialise_parameters();
}

template <class T>
EquiVae<T>::~EquiVae() = default;

template <class T>
std::vector<DenseLayer<T>*> EquiVae<T>::all_layers() {
  std::vector<DenseLayer<T>*> layers;
  for (LayerStack<T>* net : networks_)
    for (auto& l : net->layers()) layers.push_back(&l);
  return layers;
}

template <class T>
std::vector<NamedParameter<T>> EquiVae<T>::named_parameters() const {
  std::vector<NamedParameter<T>> params;
  for (const LayerStack<T>* net : networks_) {
    for (size_t l = 0; l < net->layers().size(); ++l) {
      const Layer<T>& layer = net->layers()[l];
      const std::string prefix = net->layer_name(l);
      params.push_back(
          {prefix + ".weight", layer.weight_shape(), layer.W.data, layer.dW.data, layer.W.size()});
      params.push_back({prefix + ".bias",
                        {int64_t(layer.bias_size())},
                        layer.b.data,
                        layer.db.data,
                        layer.b.size()});
    }
  }
  if (config_.gaussian())
    params.push_back({"decoder.logvar",
                      {int64_t(config_.channels)},
                      logvar_.data,
                      dlogvar_.data,
                      logvar_.size()});
  return params;
}

template <class T>
void EquiVae<T>::initialise_parameters() {
  // PyTorch's defaults for every layer (initialise_layer, model/layer_stack.h); the Gaussian
  // log-variance starts at 2 log σ₀ (config.gaussian_initial_sigma).
  uint64_t layer_index = 0;
  for (DenseLayer<T>* l : all_layers())
    initialise_layer(*l, config_.seed ^ kInitSalt, layer_index++, backend_);
  if (config_.gaussian())
    backend_.fill(logvar_.data, T(2 * std::log(config_.gaussian_initial_sigma)), logvar_.size());
}

template <class T>
void EquiVae<T>::set_log_prior(const std::vector<double>& log_prior) {
  if (!config_.semi_supervised()) return;  // a constant of the supervised loss
  check(int(log_prior.size()) == config_.classes, "log prior",
        "has " + std::to_string(log_prior.size()) + " classes, the model " +
            std::to_string(config_.classes));
  std::vector<T> values(log_prior.begin(), log_prior.end());
  backend_.upload(log_prior_.data, values.data(), values.size() * sizeof(T));
}

template <class T>
void EquiVae<T>::check_batch(const Batch& batch, const Dataset& data,
                             const Dataset* unlabelled) const {
  const int D = config_.input_dim;
  check(
      int(batch.rows.size()) == B_, "batch",
      "has " + std::to_string(batch.rows.size()) + " rows, the plan expects " + std::to_string(B_));
  check(int(batch.unlabelled_rows.size()) == U_, "batch",
        "has " + std::to_string(batch.unlabelled_rows.size()) +
            " unlabelled items, the plan expects " + std::to_string(U_));
  check(int(batch.offsets.size()) == R_ + 1 && int(batch.members.size()) <= members_.cols &&
            batch.offsets[0] == 0 && batch.offsets[R_] == int32_t(batch.members.size()),
        "batch", "pooling sets do not match the plan");
  // Per-element checks build their message only on failure: they run for every step.
  for (int i = 0; i < R_; ++i)
    if (batch.offsets[i + 1] <= batch.offsets[i])
      throw Error("batch",
                  "pooling set of row " + std::to_string(i) + " is empty or its offsets decrease");
  for (int32_t j : batch.members)
    if (j < 0 || j >= B_)
      throw Error("batch", "pooling member " + std::to_string(j) +
                               " is not a labelled batch row (0.." + std::to_string(B_ - 1) + ")");
  check(data.dim == D, data.source,
        "images have " + std::to_string(data.dim) + " pixels, the model expects " +
            std::to_string(D));
  check(
      U_ == 0 || (unlabelled && unlabelled->dim == D), "batch",
      "the semi-supervised plan needs an unlabelled set of " + std::to_string(D) + "-pixel images");
  for (int32_t row : batch.rows)
    if (row < 0 || row >= data.n)
      throw Error("batch", "row " + std::to_string(row) + " is outside " + data.source + " (" +
                               std::to_string(data.n) + " images)");
  for (int32_t row : batch.unlabelled_rows)
    if (row < 0 || row >= unlabelled->n)
      throw Error("batch", "unlabelled row " + std::to_string(row) + " is outside " +
                               unlabelled->source + " (" + std::to_string(unlabelled->n) +
                               " images)");
}

template <class T>
void EquiVae<T>::load_batch(const Batch& batch, const Dataset& data, const Dataset* unlabelled) {
  const int D = config_.input_dim, C = config_.classes;
  check_batch(batch, data, unlabelled);
  // Row i < B is item i; row B + u·C + y unlabelled item u (for each of its C labels). The
  // semi-supervised batch is 1,160 images (3.6 MB): rows in parallel.
  const int rows = B_ + U_ * C;
#pragma omp parallel for schedule(static) if (size_t(rows) * D >= (size_t(1) << 18))
  for (int row = 0; row < rows; ++row) {
    const float* src = row < B_ ? data.image(batch.rows[row])
                                : unlabelled->image(batch.unlabelled_rows[(row - B_) / C]);
    std::copy(src, src + D, staging_.begin() + size_t(row) * D);
  }
  backend_.upload(x_.data, staging_.data(), size_t(R_) * D * sizeof(T));
  if (config_.semi_supervised()) {
    // The classifier sees each item once: the labelled rows, then row y = 0 of every u.
    backend_.upload(xq_.data, staging_.data(), size_t(B_) * D * sizeof(T));
    for (int u = 0; u < U_; ++u)
      backend_.upload(xq_.row(B_ + u), staging_.data() + size_t(B_ + u * C) * D, D * sizeof(T));
  }
  backend_.upload(offsets_.data, batch.offsets.data(), batch.offsets.size() * sizeof(int32_t));
  backend_.upload(members_.data, batch.members.data(), batch.members.size() * sizeof(int32_t));
  std::vector<int32_t> inverse(size_t(B_) + 1 + batch.members.size());
  cpu::pool_transpose(batch.offsets.data(), batch.members.data(), R_, B_, inverse.data(),
                      inverse.data() + B_ + 1);
  backend_.upload(inv_offsets_.data, inverse.data(), size_t(B_ + 1) * sizeof(int32_t));
  backend_.upload(inv_rows_.data, inverse.data() + B_ + 1, batch.members.size() * sizeof(int32_t));
}

template <class T>
double EquiVae<T>::mean_of(const Tensor<T>& values, int count) {
  backend_.download(metric_rows_.data(), values.data, size_t(count) * sizeof(T));
  double sum = 0;
  for (int i = 0; i < count; ++i) sum += double(metric_rows_[i]);
  return sum / count;
}

template <class T>
StepMetrics EquiVae<T>::forward(uint64_t step) {
  forward_ops(step, nullptr);
  return read_metrics();
}

template <class T>
StepMetrics EquiVae<T>::read_metrics() {
  StepMetrics metrics;
  metrics.recon = mean_of(ll_, B_);
  metrics.kl = mean_of(kl_, B_);
  if (config_.semi_supervised()) {
    metrics.classifier_nll = mean_of(nll_, B_);
    metrics.unlabelled_bound = mean_of(bound_, U_);
  }
  return metrics;
}

template <class T>
void EquiVae<T>::forward_ops(uint64_t step, const DeviceCounters* counters) {
  DeviceRange<T> range(device_, "forward");
  Backend<T>& be = backend_;
  const int B = B_, R = R_, D = config_.input_dim, dr = config_.latent_r, dv = config_.latent_v;
  if (!encoder_trunk_.empty()) {
    // Needs nothing of f_inv: beside it, on a backend that can (trunk_beside).
    DeviceBeside<T> beside(device_);
    encoder_trunk_.forward(be, trunk_input().data, B + U_);  // [B + U, F]
  }
  // The encoder's first layer sees [features ; r]: its features part needs nothing of f_inv,
  // so it is issued first, beside f_inv and the pooling (dense_forward_partial) — once per
  // item, each unlabelled item's product then copied to its C rows.
  encoder_.forward_partial(be, encoder_features(), F_, R, shared_rows());
  const Tensor<T>& e = finv_.forward(be, x_.data, B);  // [B, d_r]
  be.pool_forward(r_.data, e.data, offsets_.data, members_.data, R, dr);
  const Tensor<T>& mulv = encoder_.forward_rest(be, r_.data, F_, R);  // [R, 2 d_v]
  // The decoder's first layer sees [r ; v] the same way: its r part beside the encoder.
  decoder_.forward_partial(be, r_.data, dr, R);
  if (counters)
    device_->sample_kl_forward(v_.data, eps_.data, kl_.data, mulv.data, R, dv, config_.seed,
                               counters, 0);
  else
    be.sample_kl_forward(v_.data, eps_.data, kl_.data, mulv.data, R, dv, config_.seed, step, 0);
  const Tensor<T>& out = decoder_.forward_rest(be, v_.data, dr, R);  // [R, D] logits, or μ
  if (config_.gaussian())
    be.gaussian_ll_forward(ll_.data, out.data, x_.data, logvar_.data, R, config_.channels,
                           D / config_.channels);
  else if (likelihood_gradient_in_forward())  // dll is −1/B throughout: known already
    be.bernoulli_ll_forward_backward(ll_.data, decoder_.output_grad().data, dll_.data, out.data,
                                     x_.data, R, D);
  else
    be.bernoulli_ll_forward(ll_.data, out.data, x_.data, R, D);
  if (config_.semi_supervised()) {
    const int C = config_.classes, U = U_;
    const Tensor<T>& q_logits = classifier_.forward(be, xq_.data, B + U);  // [B + U, C]
    be.softmax_xent_forward(nll_.data, probs_.data, q_logits.data, labels_.data, B, C);
    be.expectation_forward(bound_.data, q_.data, q_logits.row(B), ll_.data + B, kl_.data + B,
                           log_prior_.data, U, C);
  }
}

template <class T>
typename EquiVae<T>::ParamRange EquiVae<T>::param_range(
    std::initializer_list<const LayerStack<T>*> networks) const {
  const T* begin = nullptr;
  const T* end = nullptr;
  for (const LayerStack<T>* net : networks) {
    if (net->empty()) continue;
    const Layer<T>& last = net->layers().back();
    if (!begin) begin = net->layers().front().W.data;
    end = last.b.data + last.b.size();
  }
  if (!begin) return {};
  return {size_t(begin - params_flat_), size_t(end - begin)};
}

template <class T>
void EquiVae<T>::backward_with(const std::function<void(ParamRange)>& done) {
  auto finished = [&](ParamRange r) {
    if (done && r.count > 0) done(r);
  };
  DeviceRange<T> range(device_, "backward");
  Backend<T>& be = backend_;
  const int B = B_, R = R_, D = config_.input_dim, dr = config_.latent_r, dv = config_.latent_v;
  if (config_.semi_supervised()) {
    const int C = config_.classes, U = U_;
    Tensor<T>& dq_logits = classifier_.output_grad();  // [B + U, C]
    be.softmax_xent_backward(dq_logits.data, dnll_.data, probs_.data, labels_.data, B, C);
    // Also sets the unlabelled rows' likelihood and KL weights: ±w/U · q(y|x).
    be.expectation_backward(dq_logits.row(B), dll_.data + B, dkl_.data + B, dbound_.data, q_.data,
                            ll_.data + B, kl_.data + B, log_prior_.data, U, C);
    classifier_.backward(be, xq_.data, B + U, nullptr);
    finished(param_range({&classifier_}));
  }
  if (config_.gaussian())
    be.gaussian_ll_backward(decoder_.output_grad().data, dlogvar_.data, dll_.data,
                            decoder_.output().data, x_.data, logvar_.data, R, config_.channels,
                            D / config_.channels);
  else if (!likelihood_gradient_in_forward())  // else the forward wrote it already
    be.bernoulli_ll_backward(decoder_.output_grad().data, dll_.data, decoder_.output().data,
                             x_.data, R, D);
  decoder_.backward_two_inputs(be, r_.data, v_.data, dr, R, dr_.data, dv_.data,
                               /*accumulate_b=*/false);
  finished(param_range({&decoder_}));
  if (config_.gaussian()) finished({size_t(logvar_.data - params_flat_), size_t(config_.channels)});
  be.sample_kl_backward(encoder_.output_grad().data, dv_.data, dkl_.data, encoder_.output().data,
                        eps_.data, R, dv);
  // The encoder sees [features ; r]: r's gradient is added to the decoder's; x needs none,
  // a trunk's features theirs (per item: the rows' gradients summed), which goes on into the
  // trunk.
  T* dfeatures = encoder_trunk_.empty() ? nullptr : encoder_trunk_.output_grad().data;
  encoder_.backward_two_inputs(be, encoder_features(), r_.data, F_, R, dfeatures, dr_.data,
                               /*accumulate_b=*/true, shared_rows());
  if (!encoder_trunk_.empty()) {
    // Nothing below reads it: beside f_inv's backward, on a backend that can (trunk_beside).
    DeviceBeside<T> beside(device_);
    encoder_trunk_.backward(be, trunk_input().data, B + U_, nullptr);
  }
  finished(param_range({&encoder_trunk_, &encoder_}));
  // Every pooled row, labelled or not, hands its gradient to the labelled rows it averaged.
  be.pool_backward(finv_.output_grad().data, dr_.data, offsets_.data, members_.data,
                   inv_offsets_.data, inv_rows_.data, R, B, dr);
  finv_.backward(be, x_.data, B, nullptr);
}

template <class T>
bool EquiVae<T>::apply_adam() {
  {
    DeviceRange<T> range(device_, "optimiser");
    AdamConfig adam;
    adam.lr = config_.lr;
    backend_.adam_step(params_flat_, adam_m_.data, adam_v_.data, grads_flat_, parameter_count_,
                       adam, ++adam_steps_, adam_non_finite_t_.data);
  }
  int64_t non_finite_t = 0;
  backend_.download(&non_finite_t, adam_non_finite_t_.data, sizeof non_finite_t);
  if (non_finite_t == 0) return true;
  // Cleared, so that a caller going on regardless updates again (as before the record).
  const int64_t none = 0;
  backend_.upload(adam_non_finite_t_.data, &none, sizeof none);
  return false;
}

template <class T>
StepMetrics EquiVae<T>::train_step(const Batch& batch, const Dataset& data, uint64_t step,
                                   const Dataset* unlabelled) {
  load_batch(batch, data, unlabelled);
  StepMetrics metrics = forward(step);
  backward();
  metrics.update_finite = apply_adam();
  return metrics;
}

template <class T>
void EquiVae<T>::check_image_size(const Dataset& data) const {
  const std::string mismatch =
      config_.image_mismatch(data.dim, data.channels, data.rows, data.cols);
  check(mismatch.empty(), data.source, mismatch);
}

template class EquiVae<float>;
template class EquiVae<double>;

}  // namespace equivae
