#pragma once
// The supervised EquiVAE as a static plan (DESIGN §1–§2): every tensor is placed
// in one arena when the model is built; a training step runs the forward ops in
// order, the backward ops in reverse, then Adam over the flat parameter buffer.
//
//   x[B,784] → f_inv → e[B,d_r] → pool (leave-one-out, same class) → r[B,d_r]
//   [x ; r] → encoder → [μ | log σ²][B,2d_v] → v = μ + σ·ε, KL
//   [r ; v] → decoder → logits[B,784] → Bernoulli log-likelihood
//   loss = −mean_i (log p(x_i|r_i,v_i) − KL_i)
#include <cstdint>
#include <memory>
#include <vector>

#include "model/config.h"
#include "model/idx_dataset.h"
#include "model/mlp.h"
#include "model/sampler.h"
#include "runtime/arena.h"
#include "runtime/backend.h"
#include "runtime/checkpoint.h"

namespace equivae {

struct StepMetrics {
  double recon = 0;  // mean log p(x|r,v) per example (nats)
  double kl = 0;     // mean KL(q(v|r,x) || p(v)) per example (nats)
  double elbo() const { return recon - kl; }
};

template <class T>
class EquiVae {
 public:
  EquiVae(const EquiVaeConfig& config, Backend<T>& backend);
  EquiVae(const EquiVae&) = delete;
  EquiVae& operator=(const EquiVae&) = delete;

  // A whole training step: load the batch, forward, backward, Adam.
  StepMetrics train_step(const Batch& batch, const Dataset& data, uint64_t step);

  // The step's phases, public for tests and benchmarks.
  void load_batch(const Batch& batch, const Dataset& data);  // gather rows, upload pooling sets
  StepMetrics forward(uint64_t step);                         // noise from (seed, step, row, col)
  void backward();
  void apply_adam();

  // f_inv(x) for n images[n, input_dim] → out[n, d_r] (host memory), in chunks of B rows.
  void embed(const float* images, int64_t n, float* out);

  const EquiVaeConfig& config() const { return config_; }
  Backend<T>& backend() { return backend_; }
  size_t parameter_count() const { return parameter_count_; }
  T* parameters() const { return params_flat_; }  // backend memory, [parameter_count]
  T* gradients() const { return grads_flat_; }    // same layout as parameters()
  int64_t adam_steps() const { return adam_steps_; }

  // All parameters and the Adam state, named "finv.0.weight", …, "adam.m", "adam.v".
  Checkpoint to_checkpoint() const;
  // Restores parameters and Adam state; throws Error on a missing tensor or a shape mismatch.
  void load_checkpoint(const Checkpoint& checkpoint, const std::string& path);
  // Every layer in order, for checkpoints and tests.
  std::vector<DenseLayer<T>*> all_layers();

 private:
  void initialise_parameters();

  EquiVaeConfig config_;
  Backend<T>& backend_;
  int B_;
  Mlp<T> finv_, encoder_, decoder_;
  Arena arena_;
  // Parameter region: params_flat_ .. + parameter_count_, the same layout for gradients.
  T* params_flat_ = nullptr;
  T* grads_flat_ = nullptr;
  size_t parameter_count_ = 0;
  Tensor<T> adam_m_, adam_v_;                   // [1, parameter_count]
  Tensor<T> x_;                                 // [B, input_dim] batch images
  Tensor<int32_t> offsets_, members_;           // pooling sets, CSR [1,B+1], [1,B·(k−1)]
  Tensor<T> r_, dr_, de_;                       // [B, d_r]
  Tensor<T> xr_;                                // [B, input_dim + d_r] encoder input
  Tensor<T> v_, eps_, dv_;                      // [B, d_v]
  Tensor<T> kl_, ll_, dkl_, dll_;               // [1, B]
  Tensor<T> rv_, drv_;                          // [B, d_r + d_v] decoder input
  int64_t adam_steps_ = 0;
  std::vector<T> staging_;                      // host gather buffer [B, input_dim]
  std::vector<T> metric_rows_;                  // host copy of ll / kl rows
};

}  // namespace equivae
