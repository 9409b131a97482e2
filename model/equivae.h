#pragma once
// The EquiVAE as a static plan (README, "The model"): every tensor is placed in one arena when the
// model is built; a training step runs the forward ops in order, the backward ops in reverse,
// then Adam over the flat parameter buffer.
//
//   x[B,D] → f_inv → e[B,d_r] → pool (leave-one-out, same class) → r[B,d_r]
//   [x ; r] → encoder → [μ | log σ²][B,2d_v] → v = μ + σ·ε, KL
//   [r ; v] → decoder → logits[B,D] → Bernoulli log-likelihood
//   loss = −mean_i (log p(x_i|r_i,v_i) − KL_i)
//
// The convolutional model (config.architecture = conv, model/architecture.h) runs the same
// plan with conv trunks: the encoder reads [trunk(x) ; r] instead of [x ; r], and the decoder
// ends in transposed convolutions; with the Gaussian likelihood the decoder's output is μ and
// log p = log N(x | μ, e^{lv_c}) with a learned log-variance per channel ("decoder.logvar",
// trained with the other parameters).
//
// Semi-supervised (config.unlabelled = U > 0, eqs. 5–7): each of U unlabelled items is
// paired with every label y (rows B + u·C + y, r_y pooled from labelled segment y), so the
// encoder and decoder run once over R = B + C·U rows; a classifier q(y|x) on the B + U
// items gives log q(y|x) for the labelled ones and the exact expectation over y for the
// unlabelled ones:
//   loss = mean_lab(−ELBO − α log q(y|x)) + w · mean_unlab(−Σ_y q_y (ELBO_y + log p(y) − log q_y))
// An encoder trunk runs once per item (B + U rows) and its features are copied to the C rows
// of each unlabelled item (a pooling op with one member per row, whose backward sums them).
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/architecture.h"
#include "model/config.h"
#include "model/idx_dataset.h"
#include "model/mlp.h"
#include "model/sampler.h"
#include "runtime/arena.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"
#include "runtime/cuda/device_step.h"

namespace equivae {

// The "format" metadata of the checkpoints this build writes, the only version there has been.
inline constexpr const char* kCheckpointFormat = "equivae-checkpoint-1";
// Throws Error naming path, the format found and the one this build reads, when a checkpoint's
// "format" is another (a newer build's, or not an EquiVAE checkpoint). A file without the key
// (another writer's) passes: its config metadata and tensors are checked all the same.
void check_checkpoint_format(const Checkpoint& checkpoint, const std::string& path);

struct StepMetrics {
  double recon = 0;  // mean log p(x|r,v) per labelled example (nats)
  double kl = 0;     // mean KL(q(v|r,x) || p(v)) per labelled example (nats)
  double elbo() const { return recon - kl; }
  // Semi-supervised only:
  double classifier_nll = 0;    // mean −log q(y|x) over the labelled batch
  double unlabelled_bound = 0;  // mean L_unlab per unlabelled item (eq. 6, incl. log p(y))
  // false: the step's Adam update left a parameter or Adam moment NaN or infinite (the
  // metrics above are its forward's, before the update).
  bool update_finite = true;
};

// A parameter tensor by its checkpoint name, with its gradient (same layout), backend memory.
template <class T>
struct NamedParameter {
  std::string name;            // "finv.0.weight", "encoder.3.bias", "decoder.logvar"
  std::vector<int64_t> shape;  // as checkpoints store it (model/layer_stack.h: weight_shape)
  T* value = nullptr;          // [size]
  T* grad = nullptr;           // [size]
  size_t size = 0;
};

template <class T>
class EquiVae {
 public:
  EquiVae(const EquiVaeConfig& config, Backend<T>& backend);
  ~EquiVae();
  EquiVae(const EquiVae&) = delete;
  EquiVae& operator=(const EquiVae&) = delete;

  // A whole training step: load the batch, forward, backward, Adam. unlabelled: the
  // semi-supervised plan's unlabelled set (batch.unlabelled_rows index it).
  StepMetrics train_step(const Batch& batch, const Dataset& data, uint64_t step,
                         const Dataset* unlabelled = nullptr);

  // The step's phases, public for tests and benchmarks.
  void load_batch(const Batch& batch, const Dataset& data, const Dataset* unlabelled = nullptr);
  StepMetrics forward(uint64_t step);  // noise from (seed, step, row, col)
  void backward() { backward_with({}); }
  // false: the update left a parameter or Adam moment NaN or infinite (StepMetrics::
  // update_finite). Asked of the backend after each update: free on the CPU, one small
  // download on a GPU (which the device steps avoid: they ask once per window).
  bool apply_adam();

  // ---- Device-resident training, on backends that offer DeviceStepOps (CUDA), float plans:
  // the data sets are uploaded once; a step is one replay of a graph captured on first use,
  // which gathers its batch on the device, reads the step (Philox noise) and Adam's t from
  // device counters and records its metrics in a device table. Per window of steps the host
  // uploads the steps' indices (rows, pooling sets) in one copy and reads the metrics back in
  // one copy. Same numbers as train_step over the same batches and steps (up to the
  // backend's rounding).
  bool device_steps_supported() const;
  // Uploads the data sets that train_steps' batches index (kept until the next call).
  void upload_datasets(const Dataset& labelled, const Dataset* unlabelled = nullptr);
  // Steps first_step, first_step + 1, ... with batches[i] at step first_step + i. After a step
  // whose update went non-finite (its update_finite false), the window's later steps run
  // without updating anything: the state stays as that update left it, for the report.
  std::vector<StepMetrics> train_steps(const std::vector<Batch>& batches, uint64_t first_step);
  // Which convolution calls autotuning timed and lowered to GEMMs (all zero without it, or on
  // a backend without device steps).
  typename DeviceStepOps<T>::ConvolutionRoutes convolution_routes() const {
    return device_ ? device_->convolution_routes() : typename DeviceStepOps<T>::ConvolutionRoutes{};
  }
  // What GEMM autotuning has done over this plan's step captures (all zero without it).
  const GemmTuning& gemm_tuning() const { return gemm_tuning_; }

  // ---- Inference plan: f_inv and q(y|x) in chunks of EquiVaeConfig::inference_chunk rows, at
  // least the rows the training plan runs them over (B; B + U), reading its parameters in
  // place, in an arena of their own (built on first use). With inference_chunk 0 (and always
  // for a convolutional stack) the chunks are the training plan's rows, and row i's numbers are
  // those of a training step's forward over the same image, bit for bit. The results collect
  // on the backend and come back in one download per call; images kept resident on the device
  // are read in place. Call between training steps.
  // f_inv(x) for n images[n, input_dim] → out[n, d_r] (host memory).
  void embed(const float* images, int64_t n, float* out);
  // f_inv of every image of data → out[data.n, d_r]; read in place from the device when data
  // is kept resident there (keep_resident), else uploaded chunk by chunk.
  void embed(const Dataset& data, float* out);
  // Rows per chunk of the inference plan's f_inv (EquiVaeConfig::inference_chunk; builds the
  // plan on first use).
  int inference_rows();
  // Device-step backends (float): keeps a device copy of data's images for embed(data), or
  // classify(data), until forget_resident(): the labelled set of upload_datasets is reused as
  // it is, another is uploaded once. data must stay alive and unchanged meanwhile. Elsewhere
  // (the CPU backend) a no-op: the images are read from host memory as they are.
  void keep_resident(const Dataset& data);
  void forget_resident();
  // ---- Inference for figures and tools, on the model's backend, in chunks of the rows the
  // networks were placed for (R; B + U through an encoder trunk); a network with convolutions
  // runs its whole placed batch even for a shorter last chunk, so no other workspace is needed
  // (uses the plan's activation buffers: call between training steps, not inside one).
  // Mean of q(v | r, x) for images[n, input_dim] and r[n, d_r] → v_mean[n, d_v].
  void encode_v(const float* images, const float* r, int64_t n, float* v_mean);
  // Pixel means of p(x | r, v) for r[n, d_r], v[n, d_v] → pixels[n, D]: sigmoid(logits) of the
  // Bernoulli decoder, μ clamped to [0, 1] of the Gaussian one.
  void decode(const float* r, const float* v, int64_t n, float* pixels);
  // Semi-supervised: argmax_y q(y|x) for n images → labels[n] (through the inference plan).
  void classify(const float* images, int64_t n, int32_t* labels);
  void classify(const Dataset& data, int32_t* labels);  // every image of data, as embed(data)
  // log p(y) of the objective (default uniform); class frequencies of the labelled data.
  void set_log_prior(const std::vector<double>& log_prior);

  const EquiVaeConfig& config() const { return config_; }
  Backend<T>& backend() { return backend_; }
  size_t parameter_count() const { return parameter_count_; }
  T* parameters() const { return params_flat_; }  // backend memory, [parameter_count]
  T* gradients() const { return grads_flat_; }    // same layout as parameters()
  int64_t adam_steps() const { return adam_steps_; }
  // Throws Error naming data.source when its images do not fit (EquiVaeConfig::image_mismatch).
  void check_image_size(const Dataset& data) const;

  // All parameters and the Adam state, named "finv.0.weight", …, "adam.m", "adam.v".
  Checkpoint to_checkpoint() const;
  // to_checkpoint in two halves, so that a trainer reads the state back and goes on while
  // another thread makes the checkpoint of it: read_state downloads the parameters, Adam's m
  // and v into state[state_size()] (a float plan downloads straight into it, a double one
  // converts through a temporary; the vector form resizes, reusing the buffer kept from the
  // last call without new pages; the span form needs exactly state_size() floats, which a
  // trainer takes from Backend::allocate_host: page-locked on a GPU, so each epoch's 3 ×
  // parameter_count floats come back at the link's speed), and fill_checkpoint (host memory
  // only, any thread) cuts checkpoint_layout()'s tensors out of it: a trainer then holds the
  // buffer and the checkpoint made of it, 6 · parameter_count floats.
  size_t state_size() const { return 3 * parameter_count_; }
  void read_state(std::span<float> state) const;
  void read_state(std::vector<float>& state) const;
  struct CheckpointLayout {
    Checkpoint shell;             // names, shapes and metadata; every tensor's data empty
    std::vector<size_t> offsets;  // where each tensor starts in the state
  };
  CheckpointLayout checkpoint_layout() const;
  static Checkpoint fill_checkpoint(CheckpointLayout layout, std::span<const float> state);
  // Restores parameters and Adam state (a resume). Throws Error naming path on an unknown
  // format, another configuration, a missing tensor, a shape mismatch, or a NaN or infinite
  // value (naming the tensor and its first such element).
  void load_checkpoint(const Checkpoint& checkpoint, const std::string& path);
  // The parameters alone, checked the same way (inference): Adam's moments are not read, so a
  // weights-only file loads.
  void load_weights(const Checkpoint& checkpoint, const std::string& path);
  // Every layer in order (dense and convolutional), for tests.
  std::vector<DenseLayer<T>*> all_layers();
  // Every parameter tensor in checkpoint order: each layer's weight and bias (all_layers()
  // order), then the Gaussian log-variance. Checkpoints and the divergence report use it.
  std::vector<NamedParameter<T>> named_parameters() const;

 private:
  EquiVae(const EquiVaeConfig& config, Backend<T>& backend, const NetworkLayers& layers);
  void initialise_parameters();
  // The encoder trunk's input: x_ (supervised: one row per item) or xq_ (each item once).
  Tensor<T>& trunk_input() { return U_ > 0 ? xq_ : x_; }
  // The encoder head's features after the forward: x itself, or the trunk's output — one row
  // per row of R, or semi-supervised one per item ([B + U, F]: each unlabelled item's C rows
  // share its features, shared_rows()).
  const T* encoder_features() const {
    if (!encoder_trunk_.empty()) return encoder_trunk_.output().data;
    return U_ > 0 ? xq_.data : x_.data;
  }
  // Semi-supervised: how the encoder head's R rows share the B + U items' features; else null.
  const SharedRows<T>* shared_rows() const { return U_ > 0 ? &shared_rows_ : nullptr; }
  void check_batch(const Batch& batch, const Dataset& data, const Dataset* unlabelled) const;
  // The forward ops; the noise's step comes from `step`, or from the device when counters
  // is set (a captured step).
  void forward_ops(uint64_t step, const DeviceCounters* counters);
  // The supervised Bernoulli model's likelihood gradient is written by the forward
  // (bernoulli_ll_forward_backward): its dll is −1/B from the start. Semi-supervised, the
  // unlabelled rows' dll comes from the expectation's backward; the Gaussian's backward also
  // sums the log-variance gradient.
  bool likelihood_gradient_in_forward() const {
    return !config_.gaussian() && !config_.semi_supervised();
  }
  StepMetrics read_metrics();
  // Elements [offset, offset + count) of the parameter region (and of the gradients' and
  // Adam's moments', which share its layout).
  struct ParamRange {
    size_t offset = 0, count = 0;
  };
  // The parameters of networks first .. last in placement order (empty networks skipped;
  // alignment padding between their tensors included: it stays zero).
  ParamRange param_range(std::initializer_list<const LayerStack<T>*> networks) const;
  // backward(), calling done(range) once a range of parameters has its final gradients: the
  // semi-supervised classifier's, the decoder's (and the Gaussian log-variance's), the
  // encoder's with its trunk — f_inv's are the last, when it returns.
  void backward_with(const std::function<void(ParamRange)>& done);
  void device_step_ops();  // the captured step: gather, forward, backward, Adam, metrics
  // Captures the ops `issue` issues into graph slot `graph` (the capture aborted if it throws);
  // returns the backend's graph_id of the capture.
  uint64_t capture_graph(int graph, const std::function<void()>& issue);
  // Captures `steps` consecutive device steps into graph slot `graph`.
  void capture_device_steps(int graph, int steps);
  // Captures the graphs a window replays (`groups` times the graph of steps_per_graph() steps,
  // `singles` times the one-step graph) that are not yet captured, then, with GEMM autotuning,
  // times the new GEMM plans and captures again where a choice changed.
  void capture_window_graphs(size_t groups, size_t singles);
  struct Resident;   // device buffers of the device-resident training (equivae_internal.h)
  struct Inference;  // the inference plan and the data sets kept resident for it
  Inference& inference();
  // The inference copy of `trained` over images[n, D] (host; device: the same images on the
  // device, or null) → result[n, width] on the host.
  void infer_rows(LayerStack<T>& stack, const float* images, const float* device, int64_t n,
                  int width, std::vector<T>& result);
  // An inference pass captured as a graph (DeviceStepOps' inference slots): the stack over n
  // images read in place from `device` into `results`.
  struct InferenceGraphKey {
    const void* stack = nullptr;
    const float* device = nullptr;
    int64_t n = 0;
    const void* results = nullptr;
    bool operator==(const InferenceGraphKey&) const = default;
  };
  // A slot's pass: its key, and the backend's graph_id of the capture (another model on the same
  // backend may have captured over it since).
  struct InferenceGraph {
    InferenceGraphKey key;
    uint64_t id = 0;
  };
  // Runs `pass` (a whole inference pass, every image read in place on the device) as a
  // captured graph: replays the one captured for key, else captures it first.
  void run_inference_graph(const InferenceGraphKey& key, const std::function<void()>& pass);
  const float* resident_images(const Dataset& data) const;  // null when not kept resident
  // embed / classify of images[n, D] on the host, read from `device` instead where not null.
  void embed_rows(const float* images, const float* device, int64_t n, float* out);
  void classify_rows(const float* images, const float* device, int64_t n, int32_t* labels);

  EquiVaeConfig config_;
  Backend<T>& backend_;
  int B_, U_, R_;  // labelled rows, unlabelled items, rows through encoder/decoder
  int F_;          // columns the encoder head takes before r: the trunk's features, or D
  LayerStack<T> finv_;
  LayerStack<T> encoder_trunk_;  // conv: the encoder's trunk on x; dense: no layers
  LayerStack<T> encoder_;        // the encoder's head on [trunk(x) or x ; r]
  LayerStack<T> decoder_;
  LayerStack<T> classifier_;  // q(y|x); no layers in the supervised plan
  std::vector<LayerStack<T>*> networks_;
  Arena arena_;
  // Parameter region: params_flat_ .. + parameter_count_, the same layout for gradients.
  T* params_flat_ = nullptr;
  T* grads_flat_ = nullptr;
  size_t parameter_count_ = 0;
  Tensor<T> adam_m_, adam_v_;  // [1, parameter_count]
  // [1, 1] Adam's record of an update gone non-finite (its t; 0: none; cpu::adam_step), for
  // apply_adam; the device steps keep theirs in DeviceCounters.
  Tensor<int64_t> adam_non_finite_t_;
  Tensor<T> x_;                        // [R, input_dim] labelled rows, then unlabelled per label
  Tensor<int32_t> offsets_, members_;  // pooling sets of the R rows, CSR
  Tensor<int32_t> inv_offsets_, inv_rows_;  // their transpose [B+1] / [capacity], for gathers
  Tensor<T> r_, dr_;                        // [R, d_r]
  Tensor<T> v_, eps_, dv_;                  // [R, d_v]
  Tensor<T> kl_, ll_, dkl_, dll_;           // [1, R]
  Tensor<T> workspace_;                     // convolution scratch shared by every stack
  // Semi-supervised: the sets (one member each) that map row i < B to item i and row
  // B + u·C + y to item B + u, the encoder head's W_x·features taken once per item, and its
  // gradient summed per item (shared_rows_ points at them).
  Tensor<int32_t> expand_offsets_, expand_members_;       // [R + 1], [R]
  Tensor<int32_t> expand_inv_offsets_, expand_inv_rows_;  // [B + U + 1], [R]
  Tensor<T> shared_product_, shared_dproduct_;            // [B + U, hidden]
  SharedRows<T> shared_rows_;
  Tensor<T> logvar_, dlogvar_;  // [1, channels] Gaussian only
  // Semi-supervised only:
  Tensor<T> xq_;                  // [B + U, input_dim] classifier input
  Tensor<int32_t> labels_;        // [1, B] segment labels
  Tensor<T> log_prior_;           // [1, C]
  Tensor<T> nll_, probs_, dnll_;  // [1, B], [B, C], [1, B]
  Tensor<T> bound_, q_, dbound_;  // [1, U], [U, C], [1, U]
  int64_t adam_steps_ = 0;
  std::vector<T> staging_;      // host gather buffer [R, input_dim]
  std::vector<T> metric_rows_;  // host copy of per-row metrics
  double mean_of(const Tensor<T>& values, int count);
  DeviceStepOps<T>* device_ = nullptr;  // the backend's device-step ops, if it has them
  std::unique_ptr<Resident> resident_;
  std::unique_ptr<Inference> inference_;
  GemmTuning gemm_tuning_;
};

}  // namespace equivae
