#pragma once
// Hyper-parameters of the EquiVAE (README, "The model"; the paper's §3 values as defaults: 16-D
// latents, m_max = 7, Adam 1e-3, k = 16 → B = 160) and its architecture: the dense MNIST reference
// model by default, the convolutional SVHN model with a Gaussian likelihood in svhn_config().
#include <cstdint>
#include <string>

namespace equivae {

// dense: every network an MLP over the flat pixels (model/architecture.h has the layers);
// conv: f_inv, q(y|x) and the encoder start with a convolutional trunk, the decoder ends with
// transposed convolutions.
enum class Architecture { dense, conv };
// bernoulli: log p(x|r,v) = Σ x·l − softplus(l) over logits l (pixels as soft targets);
// gaussian: log N(x | μ, e^{lv_c}) with a learned log-variance per channel c.
enum class Likelihood { bernoulli, gaussian };

// The largest EquiVaeConfig::inference_chunk (validate() also keeps a chunk's widest tensor
// below the kernels' 2^31 elements).
constexpr int kMaxInferenceChunk = 1 << 20;

struct EquiVaeConfig {
  int input_dim = 784;  // pixels per image (channels × height × width for conv / gaussian)
  int hidden = 512;     // H: width of every hidden dense layer
  int latent_r = 16;    // d_r: invariant latent r
  int latent_v = 16;    // d_v: equivariant latent v
  int classes = 10;     // C
  int k = 16;           // items per class in a batch: B = C·k
  int m_max = 7;        // r_y pools m ~ U{1..m_max} other same-class items
  double lr = 1e-3;
  uint64_t seed = 1;
  // Semi-supervised (eqs. 5–7): U unlabelled items per step, each expanded over all C
  // labels (C·U extra rows through encoder and decoder) and a classifier q(y|x).
  int unlabelled = 0;  // U; 0: supervised
  // loss = mean_lab(−L_lab − α log q(y|x)) + w · mean_unlab(−L_unlab). The paper: α = 1; its
  // eq. 7 sums items, not batch means: w = N_unlab / N_lab (docs/semi-supervised.md: it collapses
  // q(y|x)).
  double unlabelled_weight = 1.0;  // w
  double classifier_weight = 1.0;  // α
  // Image geometry, NCHW: an image row is `channels` planes of height × width. Used by the
  // conv architecture and the Gaussian likelihood (one log-variance per channel). The dense
  // Bernoulli model computes with input_dim alone, but holds the shape of the images it was
  // trained on, so that images of another shape with as many pixels (56 × 14 for 28 × 28) are
  // refused; a model rebuilt from a checkpoint that does not record it has 0 × 0 × 0.
  int channels = 1, height = 28, width = 28;
  Architecture architecture = Architecture::dense;
  int conv_width = 32;  // conv: the trunk's channels are conv_width, 2·conv_width, 4·conv_width
  Likelihood likelihood = Likelihood::bernoulli;
  // Gaussian: the learned per-channel σ starts at σ₀ (log-variance 2 log σ₀). Pixels lie in
  // [0, 1]; σ₀ = 0.1 starts near where a fitted decoder ends, where σ₀ = 1 would spend thousands
  // of Adam steps (each moves the log-variance by about lr) with the reconstruction term too
  // weak to keep v in use. Only the initial value: not part of describe() or a resume's identity.
  double gaussian_initial_sigma = 0.1;
  // Rows per chunk of the inference plan's dense stacks (f_inv, q(y|x)): validation, test error,
  // embeddings. At least the training plan's rows (B; B + U); 0: exactly those, so each row's
  // numbers equal a training step's forward bit for bit (a GEMM library picks its kernels, and
  // so the order of a row's sums, by the matrix sizes). Larger chunks are far fewer launches:
  // 15 instead of 375 for a 60,000-image pass at B = 160, with GEMMs large enough to fill a GPU.
  // Convolutional stacks always run the training plan's rows (their activations and workspace
  // grow with the rows). Not part of describe() or a resume's identity.
  int inference_chunk = 4096;

  int batch() const { return classes * k; }
  bool semi_supervised() const { return unlabelled > 0; }
  bool convolutional() const { return architecture == Architecture::conv; }
  bool gaussian() const { return likelihood == Likelihood::gaussian; }
  // Rows through encoder and decoder per step: B labelled + C·U expanded unlabelled.
  int rows() const { return batch() + classes * unlabelled; }
  // Whether the geometry is the images' shape: always for conv and Gaussian models, for a
  // dense one when it holds channels × height × width = input_dim values.
  bool image_shape_known() const;
  // Throws Error naming the first field out of range.
  void validate() const;
  // Why images of `dim` values, `channels` planes of rows × cols, do not fit this model; ""
  // when they do. The value count always; the planes and their size where the image shape is
  // known: 3,072 grey values of 48 × 64 are not a 3 × 32 × 32 image.
  std::string image_mismatch(int64_t dim, int image_channels, int rows, int cols) const;
  // One line of "key=value" pairs; checkpoints store it and compare it on load. The dense
  // Bernoulli model's line has only the keys it had before the convolutional model existed
  // (geometry, architecture and likelihood appear when they matter).
  std::string describe() const;
};

// The SVHN model (docs/svhn.md): 32×32×3 images, conv trunks (32, 64, 128 channels), Gaussian
// likelihood, 16-D latents, m_max = 10, k = 16 (B = 160), H = 512.
EquiVaeConfig svhn_config();

// "CxHxW": an image shape as messages and checkpoints ("image_shape") write it.
std::string shape_text(int channels, int height, int width);

const char* architecture_name(Architecture a);  // "dense", "conv"
const char* likelihood_name(Likelihood l);      // "bernoulli", "gaussian"
// Throws Error(context, …) naming the accepted values when text is neither.
Architecture parse_architecture(const std::string& text, const std::string& context);
Likelihood parse_likelihood(const std::string& text, const std::string& context);

}  // namespace equivae
