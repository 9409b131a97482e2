// figures: the paper's Figures 4 and 5 (§3.1) from a trained checkpoint, as PNG files.
// Learning curves and 2-D embeddings (Fig. 3, Fig. 5 left) are drawn by
// scripts/plot_figures.sh from metrics.csv and tools/embed's .npy files.
#include "model/figures.h"

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/error.h"
#include "runtime/flags.h"
#include "runtime/image_grid.h"
#include "runtime/png_image.h"
#include "tools/data_flags.h"
#include "tools/inference_flags.h"
#include "tools/tool_main.h"

namespace {

using namespace equivae;

constexpr const char* kUsage =
    "usage: figures [flags]\n"
    "Writes the paper's Figures 4 and 5 as PNG files into --out, decoded by the model of "
    "--checkpoint from the images of --split:\n"
    "  fig4_prior_samples.png   row y: decodes of (mean r_y, v ~ N(0, I))\n"
    "  fig4_interpolations.png  row y: image a, decodes along v(a) -> v(b) at mean r_y, image b\n"
    "  fig4_style_swap.png      top row: one image x^j per class; row i, column j: decode of "
    "(mean r_i, v(x^j))\n"
    "  fig5_invariant_grid.png  (2-D latents) decodes over a grid of r at v = 0\n"
    "  fig5_equivariant_grids.png (2-D latents) for each of --classes, decodes over a grid of "
    "v in [-extent, extent]^2 at mean r_y\n"
    "mean r_y is the mean f_inv over the split's images of class y; v(x) the mean of "
    "q(v | mean r_y, x).";

void declare_flags(Flags& f) {
  declare_model_flags(f);
  declare_inference_data_flags(f, "as the validation split");
  declare_split_flag(f);
  f.add("out", "runs/figures", "output directory for the PNG files");
  f.add("which", "all", "fig4, fig5 or all (all: Fig. 5 too when the model has 2-D latents)");
  f.add("seed", "1", "random images and prior samples (same seed, same figures)");
  f.add("samples", "10", "Fig. 4 left: prior samples per class");
  f.add("steps", "8", "Fig. 4 middle: decoded steps between the two images");
  f.add("grid", "15", "Fig. 5: points a side of the r and v grids");
  f.add("extent", "2", "Fig. 5 right: v spans [-extent, extent] in each coordinate");
  f.add("classes", "3,4,5,6", "Fig. 5 right: the classes whose v grids are drawn");
  f.add("scale", "1", "each pixel drawn scale x scale");
  f.add("help", "", "show this help", true);
}

std::vector<int> parse_classes(const std::string& text, int classes) {
  std::vector<int> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    int64_t y = -1;
    check(parse_integer(item, y) && y >= 0 && y < classes, "--classes",
          "expects class numbers in [0, " + std::to_string(classes) +
              ") separated by commas, got '" + text + "'");
    out.push_back(int(y));
  }
  check(!out.empty(), "--classes", "names no class");
  return out;
}

struct Writer {
  std::string dir;
  GridLayout layout;  // rows and cols set per figure
  void operator()(const std::string& name, const Tiles& tiles) const {
    GridLayout g = layout;
    g.rows = tiles.rows;
    g.cols = tiles.cols;
    const std::string path = (std::filesystem::path(dir) / name).string();
    const Image image = tile_grid(tiles.pixels, g);
    write_png(path, image);
    std::printf("wrote %s (%dx%d)\n", path.c_str(), image.width, image.height);
  }
};

int run(int argc, char** argv) {
  Flags flags;
  declare_flags(flags);
  if (!parse_flags_or_help(flags, argc, argv, kUsage)) return 0;
  const std::string which = flags.get("which");
  check(which == "all" || which == "fig4" || which == "fig5", "--which",
        "expects fig4, fig5 or all, got '" + which + "'");
  const int samples = int(flags.get_int("samples", 1, 100));
  const int steps = int(flags.get_int("steps", 2, 100));
  const int grid = int(flags.get_int("grid", 2, 100));
  const double extent = flags.get_double("extent", 1e-3, 100);
  const uint64_t seed = uint64_t(flags.get_int("seed", 0, INT64_MAX));

  LoadedModel loaded = load_model_from_flags(flags);
  EquiVae<float>& model = *loaded.model;
  const EquiVaeConfig& config = model.config();
  const std::vector<int> classes = parse_classes(flags.get("classes"), config.classes);
  const bool two_d = config.latent_r == 2 && config.latent_v == 2;
  check(two_d || which != "fig5", "--which fig5",
        "needs a model with 2-D latents (train_mnist --latent 2); this one has d_r = " +
            std::to_string(config.latent_r) + ", d_v = " + std::to_string(config.latent_v));
  const DataSplits splits = load_training_data(flags, loaded).splits;
  const Dataset& data = select_split(flags, splits);
  model.check_image_size(data);  // the tiles are drawn in the data's geometry
  const int pixels = data.rows * data.cols;
  check(pixels > 0 && data.dim % pixels == 0 && (data.dim / pixels == 1 || data.dim / pixels == 3),
        data.source, "images are neither grayscale nor RGB");

  // The figures this call draws, and the files it writes (checked before any drawing).
  const bool fig4 = which != "fig5", fig5 = which == "fig5" || (which == "all" && two_d);
  std::vector<std::string> names;
  if (fig4) names = {"fig4_prior_samples.png", "fig4_interpolations.png", "fig4_style_swap.png"};
  if (fig5) names.insert(names.end(), {"fig5_invariant_grid.png", "fig5_equivariant_grids.png"});
  const ScopedOutputDirectory out = output_directory(flags, names);
  Writer write;
  write.dir = out.path();
  write.layout.channels = data.dim / pixels;
  write.layout.height = data.rows;
  write.layout.width = data.cols;
  write.layout.scale = int(flags.get_int("scale", 1, 16));
  std::fprintf(stderr, "model %s\nimages %lld (%s)\n", config.describe().c_str(), (long long)data.n,
               data.source.c_str());

  // The widest figure, in tiles a side, checked before any decoding: a PNG side has at most
  // kPngMaxSide pixels.
  int widest = 0;
  if (fig4) widest = std::max({samples, steps + 2, config.classes + 1});
  if (fig5) widest = std::max(widest, int(classes.size()) * (grid + 1) - 1);
  const int64_t cell = int64_t(std::max(write.layout.height, write.layout.width)) *
                       write.layout.scale;  // as tile_grid lays them out
  const int64_t side = widest * (cell + write.layout.gutter) + write.layout.gutter;
  check(side <= kPngMaxSide, "figures",
        "the widest figure would be " + std::to_string(side) +
            " pixels a side, more than a PNG's " + std::to_string(kPngMaxSide) +
            " here: lower --samples, --steps, --grid or --scale");

  FigureMaker<float> figures(model, data, seed);
  if (fig4) {
    write("fig4_prior_samples.png", figures.prior_samples(samples));
    write("fig4_interpolations.png", figures.interpolations(steps));
    write("fig4_style_swap.png", figures.style_swap());
  }
  if (fig5) {
    write("fig5_invariant_grid.png", figures.invariant_grid(grid));
    std::vector<Tiles> panels;
    for (int y : classes) panels.push_back(figures.equivariant_grid(y, grid, extent));
    write("fig5_equivariant_grids.png", side_by_side(panels, write.layout.gutter_value));
  } else if (which == "all") {
    std::fprintf(stderr, "Fig. 5 skipped: it needs 2-D latents (train_mnist --latent 2)\n");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("figures", run, argc, argv);
}
