#include "model/classifier.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kernels/philox.h"
#include "model/architecture.h"
#include "runtime/error.h"
#include "runtime/interrupt.h"

namespace equivae {
namespace {
// Philox streams of one classifier seed: initial weights, dropout masks, minibatch order.
constexpr uint64_t kInitSalt = 0xC1A5'0000'0000'0001ull;
constexpr uint64_t kDropoutSalt = 0xC1A5'0000'0000'0002ull;
constexpr uint64_t kShuffleSalt = 0xC1A5'0000'0000'0003ull;

// The whole network: the convolutions, the dense hidden layers, the dense output layer.
std::vector<LayerSpec> layer_specs(int in, int classes, const ClassifierConfig& c) {
  std::vector<LayerSpec> specs = c.convolutions;
  int width = specs.empty() ? in : specs.back().out;
  for (int h : c.hidden) specs.push_back(LayerSpec::dense(width, h)), width = h;
  specs.push_back(LayerSpec::dense(width, classes));
  return specs;
}

std::string shape_text(int C, int H, int W) {
  return std::to_string(C) + "×" + std::to_string(H) + "×" + std::to_string(W);
}

void validate_convolutions(int in, const std::vector<LayerSpec>& convs) {
  const std::string where = "classifier";
  for (size_t l = 0; l < convs.size(); ++l) {
    const LayerSpec& s = convs[l];
    const std::string which = "convolution " + std::to_string(l);
    check(s.kind == LayerKind::conv2d, where, which + " is not a conv2d layer");
    const std::string problem = cpu::conv_shape_problem(s.conv, false);
    check(problem.empty(), where, which + ": " + problem);
    const int Ho = cpu::conv_out_h(s.conv, false), Wo = cpu::conv_out_w(s.conv, false);
    check(s.in == s.conv.C_in * s.conv.H * s.conv.W && s.out == s.conv.C_out * Ho * Wo, where,
          which + ": in/out do not match its shape (build it with LayerSpec::conv2d)");
    if (l == 0) {
      check(in == s.in, where,
            "input width " + std::to_string(in) + " is not the first convolution's input " +
                shape_text(s.conv.C_in, s.conv.H, s.conv.W) + " = " + std::to_string(s.in));
      continue;
    }
    const Conv2dShape& below = convs[l - 1].conv;
    const int Hb = cpu::conv_out_h(below, false), Wb = cpu::conv_out_w(below, false);
    check(s.conv.C_in == below.C_out && s.conv.H == Hb && s.conv.W == Wb, where,
          which + " takes a " + shape_text(s.conv.C_in, s.conv.H, s.conv.W) +
              " image, convolution " + std::to_string(l - 1) + " gives " +
              shape_text(below.C_out, Hb, Wb));
  }
}

void validate(int in, int classes, const ClassifierConfig& c) {
  const std::string where = "classifier";
  check(in >= 1, where, "input width must be ≥ 1, got " + std::to_string(in));
  check(classes >= 2, where, "needs ≥ 2 classes, got " + std::to_string(classes));
  validate_convolutions(in, c.convolutions);
  for (int h : c.hidden)
    check(h >= 1, where, "hidden widths must be ≥ 1, got " + std::to_string(h));
  check(c.dropout >= 0 && c.dropout < 1, where,
        "dropout must lie in [0, 1), got " + std::to_string(c.dropout));
  check(c.lr > 0 && std::isfinite(c.lr), where, "lr must be > 0, got " + std::to_string(c.lr));
  check(c.batch >= 1, where, "batch must be ≥ 1, got " + std::to_string(c.batch));
  check(c.epochs >= 0, where, "epochs must be ≥ 0, got " + std::to_string(c.epochs));
}
}  // namespace

ClassifierConfig neural_classifier_preset() {
  ClassifierConfig c;
  c.hidden = {128, 64};
  c.dropout = 0.5;
  return c;
}

ClassifierConfig benchmark_classifier_preset(int hidden) {
  ClassifierConfig c;
  c.hidden = {hidden, hidden};
  c.dropout = 0.5;
  return c;
}

ClassifierConfig benchmark_classifier_preset(const EquiVaeConfig& model) {
  if (!model.convolutional()) {
    model.validate();
    return benchmark_classifier_preset(model.hidden);
  }
  // f_inv = trunk → dense F → H → d_r: the benchmark keeps the trunk and F → H, then C-way.
  ClassifierConfig c;
  for (const LayerSpec& l : network_layers(model).finv)
    if (l.convolution()) c.convolutions.push_back(l);
  c.hidden = {model.hidden};
  c.dropout = 0.5;
  return c;
}

template <class T>
MlpClassifier<T>::MlpClassifier(int in, int classes, const ClassifierConfig& config,
                                Backend<T>& backend)
    : config_((validate(in, classes, config), config)),
      backend_(backend),
      in_(in),
      classes_(classes),
      B_(config.batch),
      net_("classifier", layer_specs(in, classes, config)) {
  const int B = B_;
  const size_t params_begin = arena_.reserved_bytes();
  net_.place_parameters(arena_);
  const size_t params_bytes = arena_.reserved_bytes() - params_begin;
  net_.place_gradients(arena_);
  parameter_count_ = params_bytes / sizeof(T);
  arena_.place(adam_m_, 1, int(parameter_count_));
  arena_.place(adam_v_, 1, int(parameter_count_));

  net_.place_activations(arena_, B);
  // Dropout after every layer whose output feeds a dense layer: the trunk's last convolution
  // and each dense hidden layer (for a dense classifier: every hidden layer, as before).
  auto& layers = net_.layers();
  dropout_after_.assign(layers.size(), false);
  drop_y_.resize(layers.size());
  drop_mask_.resize(layers.size());
  drop_dy_.resize(layers.size());
  for (size_t l = 0; l + 1 < layers.size(); ++l) {
    if (layers[l + 1].kind != LayerKind::dense) continue;
    dropout_after_[l] = true;
    arena_.place(drop_y_[l], B, layers[l].out);
    arena_.place(drop_mask_[l], B, layers[l].out);
    arena_.place(drop_dy_[l], B, layers[l].out);
  }
  // No dropout between two convolutions: their tensor may stay blocked.
  net_.use_blocked_layouts(backend_);
  place_shared_workspace(arena_, workspace_, {&net_}, backend_, "classifier");
  arena_.place(x_, B, in);
  arena_.place(labels_, 1, B);
  arena_.place(probs_, B, classes);
  arena_.place(loss_, 1, B);
  arena_.place(dloss_, 1, B);
  arena_.allocate(backend_);

  params_flat_ = layers.front().W.data;
  grads_flat_ = layers.front().dW.data;
  staging_.assign(size_t(B) * in, T(0));
  label_staging_.assign(B, 0);
  host_rows_.resize(size_t(B) * std::max(classes, 1));
  initialise_parameters();
}

template <class T>
void MlpClassifier<T>::initialise_parameters() {
  // For a dense layer (weight_rows = fan_in = in) these are the numbers the dense-only
  // classifier always drew.
  uint64_t layer_index = 0;
  for (Layer<T>& l : net_.layers())
    initialise_layer(l, config_.seed ^ kInitSalt, layer_index++, backend_);
}

template <class T>
void MlpClassifier<T>::check_data(const std::vector<float>& features,
                                  const std::vector<int32_t>* labels, const char* what) const {
  check(features.size() % size_t(in_) == 0, what,
        "holds " + std::to_string(features.size()) + " values, not a multiple of the " +
            std::to_string(in_) + " input features");
  if (!labels) return;
  const size_t n = features.size() / size_t(in_);
  check(labels->size() == n, what,
        std::to_string(n) + " feature rows but " + std::to_string(labels->size()) + " labels");
  for (size_t i = 0; i < n; ++i)
    check((*labels)[i] >= 0 && (*labels)[i] < classes_, what,
          "label " + std::to_string((*labels)[i]) + " of row " + std::to_string(i) +
              " is outside [0, " + std::to_string(classes_) + ")");
}

template <class T>
void MlpClassifier<T>::load_batch(const float* features, const int32_t* labels, const int64_t* rows,
                                  int count) {
  check(count >= 1 && count <= B_, "classifier batch",
        "has " + std::to_string(count) + " rows, the plan holds 1.." + std::to_string(B_));
  for (int i = 0; i < count; ++i) {
    const int64_t r = rows ? rows[i] : i;
    const float* src = features + r * in_;
    std::copy(src, src + in_, staging_.begin() + size_t(i) * in_);
    if (labels) label_staging_[i] = labels[r];
  }
  // A convolutional plan runs the whole batch: the padding rows are zero images of class 0
  // (finite, so their zero gradients stay zero).
  const int uploaded = net_.convolutional() ? B_ : count;
  std::fill(staging_.begin() + size_t(count) * in_, staging_.begin() + size_t(uploaded) * in_,
            T(0));
  std::fill(label_staging_.begin() + count, label_staging_.begin() + uploaded, 0);
  backend_.upload(x_.data, staging_.data(), size_t(uploaded) * in_ * sizeof(T));
  if (labels) backend_.upload(labels_.data, label_staging_.data(), uploaded * sizeof(int32_t));
  rows_ = count;
}

template <class T>
const Tensor<T>& MlpClassifier<T>::run_network(bool training, uint64_t step) {
  Backend<T>& be = backend_;
  const int b = run_rows();
  dropped_ = training && config_.dropout > 0;
  const uint64_t seed = config_.seed ^ kDropoutSalt;
  const T* input = x_.data;
  auto& layers = net_.layers();
  for (size_t l = 0; l < layers.size(); ++l) {
    Layer<T>& layer = layers[l];
    net_.forward_layer(be, l, input, b);
    input = layer.y.data;
    // The stream is the layer's index: a dense classifier draws the masks it always drew.
    if (dropped_ && dropout_after_[l]) {
      be.dropout_forward(drop_y_[l].data, drop_mask_[l].data, layer.y.data, size_t(b) * layer.out,
                         T(config_.dropout), seed, step, uint32_t(l));
      input = drop_y_[l].data;
    }
  }
  return layers.back().y;
}

template <class T>
double MlpClassifier<T>::forward(bool training, uint64_t step) {
  const int count = rows_, b = run_rows();
  check(count >= 1, "classifier", "forward before load_batch");
  const Tensor<T>& logits = run_network(training, step);
  backend_.softmax_xent_forward(loss_.data, probs_.data, logits.data, labels_.data, b, classes_);
  // loss = mean over the loaded rows; padding rows (convolutional plans) weigh 0.
  backend_.fill(dloss_.data, T(1) / T(count), count);
  if (b > count) backend_.fill(dloss_.data + count, T(0), b - count);
  backend_.download(host_rows_.data(), loss_.data, count * sizeof(T));
  double total = 0;
  for (int i = 0; i < count; ++i) total += double(host_rows_[i]);
  return total / count;
}

template <class T>
void MlpClassifier<T>::backward() {
  Backend<T>& be = backend_;
  const int b = run_rows();
  auto& layers = net_.layers();
  be.softmax_xent_backward(layers.back().dy.data, dloss_.data, probs_.data, labels_.data, b,
                           classes_);
  for (size_t l = layers.size(); l-- > 0;) {
    // The layer's input and where its gradient goes (none for the features).
    const bool dropped_below = l > 0 && dropped_ && dropout_after_[l - 1];
    const T* input = l == 0 ? x_.data : dropped_below ? drop_y_[l - 1].data : layers[l - 1].y.data;
    T* dinput = l == 0 ? nullptr : dropped_below ? drop_dy_[l - 1].data : layers[l - 1].dy.data;
    net_.backward_layer(be, l, input, dinput, b);
    if (dropped_below)
      be.dropout_backward(layers[l - 1].dy.data, drop_dy_[l - 1].data, drop_mask_[l - 1].data,
                          size_t(b) * layers[l - 1].out);
  }
}

template <class T>
void MlpClassifier<T>::apply_adam() {
  AdamConfig adam;
  adam.lr = config_.lr;
  backend_.adam_step(params_flat_, adam_m_.data, adam_v_.data, grads_flat_, parameter_count_, adam,
                     ++adam_steps_, /*non_finite_t=*/nullptr);
}

template <class T>
TrainSummary MlpClassifier<T>::train(const std::vector<float>& features,
                                     const std::vector<int32_t>& labels,
                                     const std::vector<float>* val_features,
                                     const std::vector<int32_t>* val_labels,
                                     const std::function<bool()>& stop_requested) {
  check_data(features, &labels, "classifier training data");
  check((val_features == nullptr) == (val_labels == nullptr), "classifier validation data",
        "needs both features and labels");
  if (val_features) check_data(*val_features, val_labels, "classifier validation data");
  const int64_t n = int64_t(labels.size());
  check(n >= 1, "classifier training data", "is empty");

  // Step `s` (from 0) of `steps` in `epoch`, counted from 1 as the trainer's messages count.
  auto where = [&](int epoch, int64_t s, int64_t steps) {
    return "classifier epoch " + std::to_string(epoch) + " of " + std::to_string(config_.epochs) +
           ", step " + std::to_string(s + 1) + " of " + std::to_string(steps);
  };
  TrainSummary summary;
  std::vector<int64_t> order(n);
  std::vector<T> best_params;
  for (int epoch = 1; epoch <= config_.epochs; ++epoch) {
    // Fisher–Yates from Philox: the permutation of epoch e is a function of (seed, e).
    const uint64_t shuffle_seed = config_.seed ^ kShuffleSalt, e = epochs_trained_++;
    std::iota(order.begin(), order.end(), int64_t(0));
    for (int64_t i = n - 1; i > 0; --i)
      std::swap(order[i], order[philox_below(uint32_t(i + 1), shuffle_seed, e, 0, uint32_t(i))]);

    double loss_sum = 0;
    const int64_t steps = (n + B_ - 1) / B_;
    for (int64_t begin = 0; begin < n; begin += B_) {
      if (stop_requested && stop_requested())
        throw Interrupted(where(epoch, begin / B_, steps), "stopped on request before this step");
      const int count = int(std::min<int64_t>(B_, n - begin));
      load_batch(features.data(), labels.data(), order.data() + begin, count);
      const double loss = forward(true, uint64_t(adam_steps_));
      check(std::isfinite(loss), where(epoch, begin / B_, steps), "the loss is not finite");
      backward();
      apply_adam();
      loss_sum += loss * count;
    }
    summary.loss.push_back(loss_sum / double(n));

    if (val_features) {
      const double e_val = error(*val_features, *val_labels);
      summary.validation_error.push_back(e_val);
      if (summary.best_epoch == 0 || e_val < summary.best_validation_error) {
        summary.best_epoch = epoch;
        summary.best_validation_error = e_val;
        best_params.resize(parameter_count_);
        backend_.download(best_params.data(), params_flat_, parameter_count_ * sizeof(T));
      }
    } else {
      summary.best_epoch = epoch;
    }
  }
  if (!best_params.empty())
    backend_.upload(params_flat_, best_params.data(), parameter_count_ * sizeof(T));
  return summary;
}

template <class T>
std::vector<int32_t> MlpClassifier<T>::predict(const std::vector<float>& features) {
  check_data(features, nullptr, "classifier input");
  const int64_t n = int64_t(features.size() / size_t(in_));
  std::vector<int32_t> predictions(n);
  for (int64_t begin = 0; begin < n; begin += B_) {
    const int count = int(std::min<int64_t>(B_, n - begin));
    load_batch(features.data() + begin * in_, nullptr, nullptr, count);
    const Tensor<T>& logits = run_network(false, 0);
    backend_.download(host_rows_.data(), logits.data, size_t(count) * classes_ * sizeof(T));
    for (int i = 0; i < count; ++i) {
      const T* row = host_rows_.data() + size_t(i) * classes_;
      predictions[begin + i] = int32_t(std::max_element(row, row + classes_) - row);
    }
  }
  return predictions;
}

template <class T>
double MlpClassifier<T>::error(const std::vector<float>& features,
                               const std::vector<int32_t>& labels) {
  check_data(features, &labels, "classifier evaluation data");
  const std::vector<int32_t> predictions = predict(features);
  int64_t wrong = 0;
  for (size_t i = 0; i < labels.size(); ++i) wrong += predictions[i] != labels[i];
  return labels.empty() ? 0.0 : double(wrong) / double(labels.size());
}

template class MlpClassifier<float>;
template class MlpClassifier<double>;

}  // namespace equivae
