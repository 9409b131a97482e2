#pragma once
// The paper's two softmax classifiers (§3.1, Tables 1–2) as one static plan:
//   - the neural classifier: 2 dense hidden layers (128, 64) with dropout, trained on the
//     invariant embedding f_inv(x) of the labelled examples;
//   - the benchmark classifier: f_inv's architecture with 2 dropout layers and a C-way softmax
//     output, trained on the labels alone (raw pixels). Dense (MNIST): 784 → 512 → 512 → C;
//     conv (SVHN): f_inv's conv trunk (3 convs k4 s2 p1, 3 → 32 → 64 → 128 channels, F = 2048
//     features) → dense F → 512 → C.
//
//   x[B,in] → (conv + ReLU)* → [dropout] → (dense + ReLU → dropout) per hidden layer → dense
//   → logits[B,C] → softmax-xent; loss = mean_i −log softmax(logits_i)[y_i], Adam over one flat
//   parameter buffer. Dropout follows every hidden representation that feeds a dense layer
//   (the trunk's output and each dense hidden layer), never the inside of the trunk.
//
// Every tensor lives in one arena placed at construction (parameters, then gradients with the
// same layout, Adam state, activations, the convolutions' workspace). Dropout masks come from
// Philox at (seed, step, layer, element), the minibatch order from Philox per epoch, the
// initial weights from Philox (PyTorch's defaults, U(±1/√fan_in)): a run is a pure function of
// its seed.
#include <cstdint>
#include <functional>
#include <vector>

#include "model/config.h"
#include "model/layer_stack.h"
#include "model/mlp.h"
#include "runtime/arena.h"
#include "runtime/backend.h"

namespace equivae {

struct ClassifierConfig {
  // conv2d layers (LayerSpec::conv2d) before the dense layers, ReLU after each, dropout after
  // the last; each takes the image the one below gives. The first one's in (C·H·W) is the
  // classifier's input width. Empty: a dense classifier.
  std::vector<LayerSpec> convolutions;
  std::vector<int> hidden;  // dense hidden widths; each is dense + ReLU + dropout
  // Drop probability in [0, 1) after each dense hidden layer and after the trunk.
  double dropout = 0.5;
  double lr = 1e-3;  // Adam, β (0.9, 0.999), ε 1e-8
  int batch = 100;   // minibatch rows; the last minibatch of an epoch may be partial
  int epochs = 50;
  uint64_t seed = 1;
};

struct TrainSummary {
  std::vector<double> loss;              // [epochs] mean training loss per example (nats)
  std::vector<double> validation_error;  // [epochs] validation error after each epoch; empty
                                         // without validation data
  int best_epoch = 0;  // 1-based epoch whose parameters were kept (lowest validation error, the
                       // earliest on ties); without validation data, the last epoch
  double best_validation_error = -1;  // validation error of best_epoch; −1 without validation
};

// A softmax classifier (an optional conv trunk, dense + ReLU + dropout after each hidden layer,
// linear C-way output), its parameters and activations placed in one Arena, trained with Adam
// on (features[n, in], labels[n]); images are NCHW rows [n, C·H·W].
//
// Partial minibatches: a dense classifier runs exactly the loaded rows. A convolutional one
// always runs all `batch` rows (the convolutions' workspace is sized for them): the rows past
// the loaded ones are zero images with label 0 and loss weight 0, so they add nothing to the
// loss or the gradients.
template <class T>
class MlpClassifier {
 public:
  // Throws Error on a bad configuration (in, classes or a width < 1, dropout outside [0, 1),
  // convolutions that are not conv2d, do not chain, or whose first input is not `in`, …).
  MlpClassifier(int in, int classes, const ClassifierConfig& config, Backend<T>& backend);
  MlpClassifier(const MlpClassifier&) = delete;
  MlpClassifier& operator=(const MlpClassifier&) = delete;

  // Trains for config.epochs over minibatches of a fresh Philox permutation per epoch; every
  // example is used once per epoch (the last minibatch holds the n mod batch leftovers and is
  // weighted like any other step: its loss is the mean over its own rows). Returns the mean
  // training loss per epoch. With validation features/labels, measures the validation error
  // after every epoch and keeps the parameters of the epoch with the lowest one (early-stopping
  // selection on validation data, never on test data); the Adam state stays that of the last
  // epoch. Throws Error on mismatched sizes or a label outside [0, classes).
  // stop_requested (null: never asked) is asked before each step, as the EquiVAE trainer asks
  // it (TrainOptions::stop_requested): true throws Interrupted (runtime/interrupt.h) naming
  // the epoch and the step, the parameters left as that step found them.
  TrainSummary train(const std::vector<float>& features, const std::vector<int32_t>& labels,
                     const std::vector<float>* val_features, const std::vector<int32_t>* val_labels,
                     const std::function<bool()>& stop_requested = nullptr);
  // argmax of the logits for each row of features[n, in], dropout off.
  std::vector<int32_t> predict(const std::vector<float>& features);
  // Fraction of rows whose prediction differs from labels.
  double error(const std::vector<float>& features, const std::vector<int32_t>& labels);

  // The step's phases, public for tests. load_batch copies rows[0..count) of features[·, in]
  // (rows null: the first count rows) and their labels into the plan, count ≤ batch (a
  // convolutional plan pads the rest of the batch as above).
  void load_batch(const float* features, const int32_t* labels, const int64_t* rows, int count);
  // Mean loss over the loaded rows; training applies dropout with the masks of `step`.
  double forward(bool training, uint64_t step);
  void backward();  // gradients of the last forward's mean loss
  void apply_adam();

  const ClassifierConfig& config() const { return config_; }
  int in() const { return in_; }
  int classes() const { return classes_; }
  size_t parameter_count() const { return parameter_count_; }
  T* parameters() const { return params_flat_; }  // backend memory, [parameter_count]
  T* gradients() const { return grads_flat_; }    // same layout as parameters()
  // Convolutions, then dense hidden layers, then the output layer.
  std::vector<Layer<T>>& layers() { return net_.layers(); }
  bool convolutional() const { return net_.convolutional(); }
  int64_t adam_steps() const { return adam_steps_; }

 private:
  void initialise_parameters();
  // Rows every op runs: the whole batch with convolutions, else the loaded rows.
  int run_rows() const { return net_.convolutional() ? B_ : rows_; }
  const Tensor<T>& run_network(bool training, uint64_t step);  // logits [run_rows(), classes]
  void check_data(const std::vector<float>& features, const std::vector<int32_t>* labels,
                  const char* what) const;

  ClassifierConfig config_;
  Backend<T>& backend_;
  int in_, classes_, B_;
  LayerStack<T> net_;  // convolutions, dense hidden..., dense → classes: ReLU but on the last
  Arena arena_;
  T* params_flat_ = nullptr;
  T* grads_flat_ = nullptr;
  size_t parameter_count_ = 0;  // includes alignment padding (gradients there stay zero)
  Tensor<T> adam_m_, adam_v_;   // [1, parameter_count]
  Tensor<T> workspace_;         // [1, elements]: the convolutions' scratch (empty if dense)
  Tensor<T> x_;                 // [B, in]
  Tensor<int32_t> labels_;      // [1, B]
  // Per layer l that dropout follows (empty tensors elsewhere): the dropped output
  // yd = y ⊙ mask [B, out_l] (the next layer's input), the mask, and the gradient w.r.t. yd
  // (the next layer's dx).
  std::vector<Tensor<T>> drop_y_, drop_mask_, drop_dy_;
  std::vector<bool> dropout_after_;  // [layers]: whether dropout follows layer l
  Tensor<T> probs_;                  // [B, classes]
  Tensor<T> loss_, dloss_;           // [1, B]
  int rows_ = 0;                     // rows loaded by load_batch
  bool dropped_ = false;             // whether the last forward applied dropout
  int64_t adam_steps_ = 0;
  uint64_t epochs_trained_ = 0;  // numbers the per-epoch permutations across train() calls
  std::vector<T> staging_;       // host gather buffer [B, in]
  std::vector<int32_t> label_staging_;
  std::vector<T> host_rows_;  // host copy of loss / logits rows
};

// Paper presets (§3.1). Neural classifier on f_inv features: hidden {128, 64}, dropout 0.5.
ClassifierConfig neural_classifier_preset();
// Benchmark classifier on pixels: hidden {hidden, hidden} (f_inv's trunk, 512 in the reference
// architecture), dropout 0.5 after each (2 dropout layers), C-way softmax output.
ClassifierConfig benchmark_classifier_preset(int hidden = 512);
// The benchmark classifier of a model: f_inv's architecture with 2 dropout layers and a C-way
// output. Dense model: hidden {H, H}, no convolutions (benchmark_classifier_preset(H)); conv
// model: f_inv's conv trunk (network_layers(model).finv's convolutions), hidden {H}. Its input
// width is model.input_dim (NCHW images for the conv model). Throws Error on an invalid model.
ClassifierConfig benchmark_classifier_preset(const EquiVaeConfig& model);

}  // namespace equivae
