#include "model/config.h"

#include <algorithm>
#include <sstream>

#include "runtime/error.h"

namespace equivae {

void EquiVaeConfig::validate() const {
  const std::string ctx = "model configuration";
  check(input_dim > 0, ctx, "input_dim must be positive, got " + std::to_string(input_dim));
  check(hidden > 0, ctx, "hidden must be positive, got " + std::to_string(hidden));
  check(latent_r > 0, ctx, "latent_r must be positive, got " + std::to_string(latent_r));
  check(latent_v > 0, ctx, "latent_v must be positive, got " + std::to_string(latent_v));
  check(classes >= 2, ctx, "classes must be at least 2, got " + std::to_string(classes));
  check(k >= 2, ctx,
        "k (items per class per batch) must be at least 2 so every item has a same-class "
        "partner to pool, got " +
            std::to_string(k));
  check(m_max >= 1, ctx, "m_max must be at least 1, got " + std::to_string(m_max));
  check(lr > 0, ctx, "learning rate must be positive");
  check(unlabelled >= 0, ctx, "unlabelled items per step must be ≥ 0");
  check(unlabelled_weight >= 0, ctx, "unlabelled weight must be ≥ 0");
  check(classifier_weight >= 0, ctx, "classifier weight must be ≥ 0");
  check(gaussian_initial_sigma > 0, ctx, "the Gaussian's initial sigma must be positive");
  check(inference_chunk >= 0 && inference_chunk <= kMaxInferenceChunk, ctx,
        "inference_chunk must be 0 (the training batch's rows) to " +
            std::to_string(kMaxInferenceChunk) + " rows, got " + std::to_string(inference_chunk));
  // The kernels index a step's tensors with 32-bit ints (CPU and GPU alike): its largest,
  // rows × the widest row (the input, a hidden layer, the encoder's μ and log σ², or a conv
  // layer's 2× downsampled feature map), must stay below 2^31 elements. In 128 bits, and the
  // product only of factors below 2^31: a checkpoint's metadata can hold any int in each field.
  using Wide = __int128;
  const Wide limit = Wide(1) << 31;
  Wide widest = std::max<Wide>({Wide(input_dim), Wide(hidden), 2 * Wide(latent_v)});
  if (convolutional())
    widest = std::max<Wide>(widest, Wide(conv_width) * Wide(height) * Wide(width) / 4);
  const Wide step_rows = Wide(classes) * k + Wide(classes) * unlabelled;
  auto text = [](Wide v) { return std::to_string(int64_t(std::min<Wide>(v, INT64_MAX))); };
  check(widest < limit && step_rows < limit && step_rows * widest < limit, ctx,
        "a step of " + text(step_rows) + " rows (" + std::to_string(classes) +
            " classes × (k = " + std::to_string(k) +
            " + unlabelled = " + std::to_string(unlabelled) + ")) of up to " + text(widest) +
            " values is too large: the kernels index 2^31 elements at most (use a smaller k, "
            "unlabelled, hidden" +
            (convolutional() ? " or conv_width)" : " or latent)"));
  // The inference plan's dense chunks (f_inv and q(y|x): the input, hidden layers, and latent_r
  // or classes wide outputs); a convolutional model's stacks run the training rows instead.
  const Wide chunk_widest =
      std::max<Wide>({Wide(input_dim), Wide(hidden), Wide(latent_r), Wide(classes)});
  check(convolutional() || Wide(inference_chunk) * chunk_widest < limit, ctx,
        "an inference chunk of " + std::to_string(inference_chunk) + " rows of up to " +
            text(chunk_widest) +
            " values is too large: the kernels index 2^31 elements at most (use a smaller "
            "inference_chunk)");
  if (!convolutional() && !gaussian()) return;  // the geometry is not used
  check(channels > 0 && height > 0 && width > 0, ctx,
        "image geometry must be positive, got channels=" + std::to_string(channels) +
            " height=" + std::to_string(height) + " width=" + std::to_string(width));
  check(__int128(channels) * height * width == input_dim, ctx,
        "input_dim " + std::to_string(input_dim) +
            " is not channels × height × width = " + std::to_string(channels) + " × " +
            std::to_string(height) + " × " + std::to_string(width));
  if (!convolutional()) return;
  check(conv_width > 0, ctx, "conv_width must be positive, got " + std::to_string(conv_width));
  // Three stride-2 layers halve the image exactly (and the decoder's transposes double it back)
  // only when both sides are multiples of 8.
  check(height % 8 == 0 && width % 8 == 0, ctx,
        "the conv architecture needs height and width divisible by 8, got " +
            std::to_string(height) + "x" + std::to_string(width));
}

bool EquiVaeConfig::image_shape_known() const {
  if (convolutional() || gaussian()) return true;
  return channels > 0 && height > 0 && width > 0 &&
         __int128(channels) * height * width == input_dim;
}

std::string EquiVaeConfig::image_mismatch(int64_t dim, int image_channels, int rows,
                                          int cols) const {
  const bool shaped = image_shape_known();
  const bool same_shape = image_channels == channels && rows == height && cols == width;
  if (dim == input_dim && (!shaped || same_shape)) return {};
  const std::string images = shape_text(image_channels, rows, cols),
                    model = shape_text(channels, height, width);
  if (!shaped)
    return "images have " + std::to_string(dim) + " values, the model expects " +
           std::to_string(input_dim) + " values";
  // As many values in another shape: the shapes are what differs.
  if (dim == input_dim)
    return "images are " + images + ", the model expects " + model + " images (the same " +
           std::to_string(dim) + " values in another shape)";
  return "images have " + std::to_string(dim) + " values (" + images + "), the model expects " +
         std::to_string(input_dim) + " values (" + model + ")";
}

std::string EquiVaeConfig::describe() const {
  std::ostringstream s;
  s << "input_dim=" << input_dim << " hidden=" << hidden << " latent_r=" << latent_r
    << " latent_v=" << latent_v << " classes=" << classes << " k=" << k << " m_max=" << m_max;
  if (semi_supervised()) s << " unlabelled=" << unlabelled << " classifier=" << hidden;
  if (convolutional() || gaussian())
    s << " channels=" << channels << " height=" << height << " width=" << width;
  if (convolutional())
    s << " architecture=" << architecture_name(architecture) << " conv_width=" << conv_width;
  if (gaussian()) s << " likelihood=" << likelihood_name(likelihood);
  return s.str();
}

std::string shape_text(int channels, int height, int width) {
  return std::to_string(channels) + "x" + std::to_string(height) + "x" + std::to_string(width);
}

EquiVaeConfig svhn_config() {
  EquiVaeConfig c;
  c.channels = 3;
  c.height = c.width = 32;
  c.input_dim = 3 * 32 * 32;
  c.architecture = Architecture::conv;
  c.conv_width = 32;
  c.likelihood = Likelihood::gaussian;
  c.latent_r = c.latent_v = 16;
  c.m_max = 10;
  c.k = 16;
  return c;
}

const char* architecture_name(Architecture a) {
  return a == Architecture::conv ? "conv" : "dense";
}
const char* likelihood_name(Likelihood l) {
  return l == Likelihood::gaussian ? "gaussian" : "bernoulli";
}

Architecture parse_architecture(const std::string& text, const std::string& context) {
  if (text == "dense") return Architecture::dense;
  if (text == "conv") return Architecture::conv;
  throw Error(context, "architecture '" + text + "' is neither dense nor conv");
}

Likelihood parse_likelihood(const std::string& text, const std::string& context) {
  if (text == "bernoulli") return Likelihood::bernoulli;
  if (text == "gaussian") return Likelihood::gaussian;
  throw Error(context, "likelihood '" + text + "' is neither bernoulli nor gaussian");
}

}  // namespace equivae
