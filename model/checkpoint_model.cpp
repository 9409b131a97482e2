#include "model/checkpoint_model.h"

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>
#include <sstream>

#include "runtime/error.h"

namespace equivae {
namespace {

int64_t parse_int(const std::string& path, const std::string& key, const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text.c_str(), &end, 10);
  check(!text.empty() && *end == '\0' && errno == 0 && value >= 0 && value < (1ll << 31), path,
        "config metadata: " + key + "=" + text + " is not a valid count");
  return value;
}

double parse_double(const std::string& path, const std::string& key, const std::string& text) {
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  check(!text.empty() && *end == '\0', path,
        "config metadata: " + key + "=" + text + " is not a number");
  return value;
}

// "CxHxW" of three positive counts, or false.
bool parse_shape(const std::string& text, int (&dims)[3]) {
  const char* p = text.data();
  const char* const end = p + text.size();
  for (int i = 0; i < 3; ++i) {
    if (i > 0 && (p == end || *p++ != 'x')) return false;
    const auto r = std::from_chars(p, end, dims[i]);
    if (r.ec != std::errc() || dims[i] <= 0) return false;
    p = r.ptr;
  }
  return p == end;
}

// The images' shape from "image_shape" (written beside the config since the dense model keeps
// it). A dense checkpoint without it (an older build's) gets the unknown shape 0x0x0, so its
// images are checked by their number of values alone.
void read_image_shape(const Checkpoint& checkpoint, const std::string& path, EquiVaeConfig& c) {
  auto it = checkpoint.metadata.find("image_shape");
  if (it == checkpoint.metadata.end()) {
    if (!c.convolutional() && !c.gaussian()) c.channels = c.height = c.width = 0;
    return;
  }
  int dims[3] = {};
  check(parse_shape(it->second, dims), path,
        "metadata image_shape '" + it->second + "' is not channels x height x width (1x28x28)");
  const std::string config_shape = shape_text(c.channels, c.height, c.width);
  const bool shaped = c.convolutional() || c.gaussian();
  check(!shaped || it->second == config_shape, path,
        "metadata image_shape " + it->second + " contradicts the config's " + config_shape);
  check(__int128(dims[0]) * dims[1] * dims[2] == c.input_dim, path,
        "metadata image_shape " + it->second + " does not hold the config's input_dim " +
            std::to_string(c.input_dim) + " values");
  c.channels = dims[0], c.height = dims[1], c.width = dims[2];
}

}  // namespace

EquiVaeConfig config_from_checkpoint(const Checkpoint& checkpoint, const std::string& path) {
  check_checkpoint_format(checkpoint, path);
  auto it = checkpoint.metadata.find("config");
  check(it != checkpoint.metadata.end(), path,
        "not an EquiVAE checkpoint (no config in its metadata)");
  EquiVaeConfig c;
  int64_t classifier_hidden = -1;
  using Setter = std::function<void(const std::string&, const std::string&)>;
  auto to_int = [&](int& field) -> Setter {
    return [&](const std::string& k, const std::string& v) { field = int(parse_int(path, k, v)); };
  };
  auto to_double = [&](double& field) -> Setter {
    return [&](const std::string& k, const std::string& v) { field = parse_double(path, k, v); };
  };
  const std::map<std::string, Setter> setters = {
      {"input_dim", to_int(c.input_dim)},
      {"hidden", to_int(c.hidden)},
      {"latent_r", to_int(c.latent_r)},
      {"latent_v", to_int(c.latent_v)},
      {"classes", to_int(c.classes)},
      {"k", to_int(c.k)},
      {"m_max", to_int(c.m_max)},
      {"unlabelled", to_int(c.unlabelled)},
      {"lr", to_double(c.lr)},
      {"unlabelled_weight", to_double(c.unlabelled_weight)},
      {"classifier_weight", to_double(c.classifier_weight)},
      {"seed", [&](const std::string& k, const std::string& v) { c.seed = parse_int(path, k, v); }},
      {"classifier", [&](const std::string& k,
                         const std::string& v) { classifier_hidden = parse_int(path, k, v); }},
      {"channels", to_int(c.channels)},
      {"height", to_int(c.height)},
      {"width", to_int(c.width)},
      {"conv_width", to_int(c.conv_width)},
      {"architecture",
       [&](const std::string&, const std::string& v) {
         c.architecture = parse_architecture(v, path + ": config metadata");
       }},
      {"likelihood",
       [&](const std::string&, const std::string& v) {
         c.likelihood = parse_likelihood(v, path + ": config metadata");
       }},
  };
  std::istringstream words(it->second);
  std::string word;
  while (words >> word) {
    const size_t eq = word.find('=');
    check(eq != std::string::npos, path, "config metadata: '" + word + "' is not key=value");
    const std::string key = word.substr(0, eq);
    auto setter = setters.find(key);
    check(setter != setters.end(), path, "config metadata: unknown key '" + key + "'");
    setter->second(key, word.substr(eq + 1));
  }
  check(classifier_hidden < 0 || classifier_hidden == c.hidden, path,
        "config metadata: the classifier's width differs from hidden, which this engine "
        "does not build");
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(path, std::string("config metadata: ") + e.what());
  }
  read_image_shape(checkpoint, path, c);
  return c;
}

std::unique_ptr<EquiVae<float>> load_model(const std::string& checkpoint_path,
                                           Backend<float>& backend) {
  return load_model(load_checkpoint(checkpoint_path), checkpoint_path, backend);
}

std::unique_ptr<EquiVae<float>> load_model(const Checkpoint& checkpoint,
                                           const std::string& checkpoint_path,
                                           Backend<float>& backend, int inference_chunk) {
  EquiVaeConfig config = config_from_checkpoint(checkpoint, checkpoint_path);
  config.inference_chunk = inference_chunk;
  auto model = std::make_unique<EquiVae<float>>(config, backend);
  model->load_weights(checkpoint, checkpoint_path);  // inference reads no Adam state
  return model;
}

}  // namespace equivae
