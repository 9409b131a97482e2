// embed: the latents of a data set under a trained checkpoint, as NumPy .npy files for
// plotting (scripts/plot_figures.sh) or any other analysis.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "model/evaluate.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/npy_file.h"
#include "tools/data_flags.h"
#include "tools/inference_flags.h"
#include "tools/tool_main.h"

namespace {

using namespace equivae;

constexpr const char* kUsage =
    "usage: embed [flags]\n"
    "Writes the latents of the images of --split into --out as .npy files (float32 / int32, "
    "little-endian):\n"
    "  r.npy         [n, d_r] f_inv(x), the invariant embedding of each image\n"
    "  r_pooled.npy  [n, d_r] r_y as training forms it: the mean f_inv of --pool-m other "
    "images of the same class (the paper's Fig. 3 left, m = 5)\n"
    "  v.npy         [n, d_v] the mean of q(v | r_pooled, x)\n"
    "  labels.npy    [n] the class of each image";

void declare_flags(Flags& f) {
  declare_model_flags(f);
  declare_inference_data_flags(f, "as the validation split");
  declare_split_flag(f);
  f.add("out", "runs/embed", "output directory for the .npy files");
  f.add("pool-m", "5", "images pooled into each r_pooled");
  f.add("seed", "1", "which images are pooled (same seed, same files)");
  f.add("help", "", "show this help", true);
}

// A class of no more than m images pools all its other images, fewer than m: said, not done
// silently (as train_mnist says it of --m-max).
void note_pool_cap(const Dataset& data, int m) {
  std::map<int32_t, int64_t> counts;
  for (int32_t y : data.labels) ++counts[y];
  if (counts.empty()) return;
  const auto smallest = std::min_element(counts.begin(), counts.end(),
                                         [](auto& a, auto& b) { return a.second < b.second; });
  if (smallest->second - 1 >= m) return;
  std::fprintf(stderr,
               "note: --pool-m %d: a row pools at most the other images of its class: %lld in "
               "class %d (%lld images), the smallest of %s\n",
               m, (long long)(smallest->second - 1), int(smallest->first),
               (long long)smallest->second, data.source.c_str());
}

int run(int argc, char** argv) {
  Flags flags;
  declare_flags(flags);
  if (!parse_flags_or_help(flags, argc, argv, kUsage)) return 0;
  const int pool_m = int(flags.get_int("pool-m", 1, 1000));
  const uint64_t seed = uint64_t(flags.get_int("seed", 0, INT64_MAX));
  const ScopedOutputDirectory out =
      output_directory(flags, {"r.npy", "r_pooled.npy", "v.npy", "labels.npy"});
  const std::string& dir = out.path();
  LoadedModel loaded = load_model_from_flags(flags);
  EquiVae<float>& model = *loaded.model;
  const int dr = model.config().latent_r, dv = model.config().latent_v;
  const DataSplits splits = load_training_data(flags, loaded).splits;
  const Dataset& data = select_split(flags, splits);
  model.check_image_size(data);
  for (int32_t y : data.labels)
    check(y < model.config().classes, data.source,
          "label " + std::to_string(y) + " is outside the model's classes");
  note_pool_cap(data, pool_m);

  const std::vector<float> r = embed_dataset(model, data);
  const std::vector<float> pooled = pooled_invariants(r, data.labels, dr, pool_m, seed);
  const std::vector<float> v = equivariant_means(model, data, pooled);

  auto path = [&](const char* name) { return (std::filesystem::path(dir) / name).string(); };
  write_npy(path("r.npy"), r, {data.n, dr});
  write_npy(path("r_pooled.npy"), pooled, {data.n, dr});
  write_npy(path("v.npy"), v, {data.n, dv});
  write_npy(path("labels.npy"), data.labels, {data.n});
  std::printf("wrote %s/{r,r_pooled,v,labels}.npy: %lld images, d_r = %d, d_v = %d (%s)\n",
              dir.c_str(), (long long)data.n, dr, dv, data.source.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("embed", run, argc, argv);
}
