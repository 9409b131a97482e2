#include "model/equivae.h"

#include <algorithm>
#include <charconv>
#include <climits>
#include <cmath>
#include <string>
#include <type_traits>

#include "kernels/cpu/ops.h"
#include "kernels/philox.h"
#include "runtime/error.h"

namespace equivae {
namespace {
constexpr uint64_t kInitSalt = 0x1717'0000'0000'0000ull;  // parameter-init Philox stream
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
}  // namespace

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
};

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
  else
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
void EquiVae<T>::capture_device_steps(int graph, int steps) {
  device_->begin_capture(graph);
  try {
    for (int i = 0; i < steps; ++i) device_step_ops();
  } catch (...) {
    device_->abort_capture();
    throw;
  }
  device_->end_capture();
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
    return count > 0 && !device_->has_graph(graph);
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

template <class T>
typename EquiVae<T>::Inference& EquiVae<T>::inference() {
  if (inference_) return *inference_;
  // Chunks of the rows the training plan runs each network over (f_inv: B; q(y|x): B + U):
  // the same GEMM shapes, so the same numbers, row for row. Larger chunks are not exact: BLAS
  // libraries pick their kernels (and so the order of a row's sums) by the matrix sizes.
  auto inf = std::make_unique<Inference>();
  const NetworkLayers layers = network_layers(config_);
  inf->finv = std::make_unique<LayerStack<T>>("finv", layers.finv);
  inf->finv->place_inference(inf->arena, finv_.rows(), finv_);
  std::vector<LayerStack<T>*> stacks = {inf->finv.get()};
  if (config_.semi_supervised()) {
    inf->classifier = std::make_unique<LayerStack<T>>("classifier", layers.classifier);
    inf->classifier->place_inference(inf->arena, classifier_.rows(), classifier_);
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
  for (int64_t begin = 0; begin < n; begin += rows) {
    const int count = int(std::min<int64_t>(rows, n - begin));
    const T* x = inf.x.data;
    // Resident images are read in place, except a short last chunk of a convolutional stack
    // (it would read past the data set's end).
    bool in_place = false;
    if constexpr (std::is_same_v<T, float>) {
      if (device && (count == rows || !stack.convolutional())) {
        x = device + begin * D;
        in_place = true;
      }
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
  backend_.download(result.data(), results, size_t(n) * width * sizeof(T));
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

template <class T>
void EquiVae<T>::check_image_size(const Dataset& data) const {
  const std::string mismatch =
      config_.image_mismatch(data.dim, data.channels, data.rows, data.cols);
  check(mismatch.empty(), data.source, mismatch);
}

template <class T>
Checkpoint EquiVae<T>::to_checkpoint() const {
  Checkpoint ckpt;
  // Three downloads (parameters, Adam's m and v: one host sync each on a GPU), then the
  // parameter region is cut into its tensors on the host.
  auto download = [&](std::vector<float>& dst, const T* src, size_t n) {
    dst.resize(n);
    if constexpr (std::is_same_v<T, float>) {
      backend_.download(dst.data(), src, n * sizeof(T));
    } else {
      std::vector<T> host(n);
      backend_.download(host.data(), src, n * sizeof(T));
      std::copy(host.begin(), host.end(), dst.begin());
    }
  };
  std::vector<float> params;
  download(params, params_flat_, parameter_count_);
  for (const NamedParameter<T>& p : named_parameters()) {
    const size_t offset = size_t(p.value - params_flat_);
    check(p.value >= params_flat_ && offset + p.size <= parameter_count_, "model",
          "parameter " + p.name + " lies outside the parameter region");
    ckpt.tensors.push_back({p.name, p.shape,
                            std::vector<float>(params.begin() + std::ptrdiff_t(offset),
                                               params.begin() + std::ptrdiff_t(offset + p.size))});
  }
  for (const auto& [name, moment] :
       {std::pair{"adam.m", &adam_m_}, std::pair{"adam.v", &adam_v_}}) {
    NamedTensor t{name, {int64_t(parameter_count_)}, {}};
    download(t.data, moment->data, parameter_count_);
    ckpt.tensors.push_back(std::move(t));
  }
  ckpt.metadata["format"] = kCheckpointFormat;
  ckpt.metadata["config"] = config_.describe();
  // The dense model's line has no geometry: the shape of its images goes beside it.
  if (config_.image_shape_known())
    ckpt.metadata["image_shape"] = std::to_string(config_.channels) + "x" +
                                   std::to_string(config_.height) + "x" +
                                   std::to_string(config_.width);
  ckpt.metadata["adam_steps"] = std::to_string(adam_steps_);
  ckpt.metadata["weight_layout"] =
      config_.convolutional() ? "dense [in, out]: y = x . weight + bias; conv2d [out, in, kh, kw] "
                                "and conv_transpose2d [in, out, kh, kw] as PyTorch's"
                              : "[in, out]: y = x . weight + bias";
  return ckpt;
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

template class EquiVae<float>;
template class EquiVae<double>;

}  // namespace equivae
