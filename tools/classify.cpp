// classify: predicts the classes of IDX images with a trained checkpoint and writes them as
// CSV; prints the error when the labels are known.
#include <cstdio>
#include <string>
#include <vector>

#include "model/evaluate.h"
#include "model/idx_dataset.h"
#include "runtime/atomic_file.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "tools/data_flags.h"
#include "tools/inference_flags.h"
#include "tools/tool_main.h"

namespace {

using namespace equivae;

constexpr const char* kUsage =
    "usage: classify [flags]\n"
    "Classifies the images of --images (default: the test split of the data flags) with the "
    "model of --checkpoint and writes index,predicted[,label] rows to --out.\n"
    "distance: the paper's classifier, argmin_y ||f_inv(x) - mean r_y||^2 with mean r_y the "
    "mean f_inv over the training split's images of class y; for a semi-supervised checkpoint "
    "only over its labelled examples, drawn again as train_mnist --labels N drew them (the "
    "checkpoint records N and the seed), so the error is the one train_mnist printed. "
    "classifier: argmax_y q(y|x) of a semi-supervised checkpoint.\n"
    "The training data come from the data flags; a note says when they differ from those the "
    "checkpoint was trained on.";

void declare_flags(Flags& f) {
  declare_model_flags(f);
  declare_inference_data_flags(f, "from the centroids");
  f.add("images", "", "IDX image file to classify (plain or gzip)");
  f.add("labels", "", "IDX label file of --images: prints the error");
  f.add("method", "auto",
        "distance or classifier (auto: classifier for a semi-supervised checkpoint, else "
        "distance)");
  f.add("out", "runs/predictions.csv", "CSV file of the predictions");
  f.add("help", "", "show this help", true);
}

// The centroids' images: the training split, or a semi-supervised run's labelled subset
// (train_mnist's centroids), with a note when that subset cannot be drawn.
const Dataset& centroid_images(const TrainingData& data, const EquiVaeConfig& config) {
  if (data.subset) return data.subset->labelled;
  if (config.semi_supervised())
    std::fprintf(stderr,
                 "note: the centroids come from every training label, not the semi-supervised "
                 "run's labelled subset: %s\n",
                 data.why_no_subset.c_str());
  return data.splits.train;
}

// index,predicted[,label] rows; counts the wrong predictions where labels are known.
std::string predictions_csv(const Dataset& images, const std::vector<int32_t>& predicted,
                            int64_t& wrong) {
  const bool labelled = !images.labels.empty();
  std::string csv = labelled ? "index,predicted,label\n" : "index,predicted\n";
  wrong = 0;
  for (int64_t i = 0; i < images.n; ++i) {
    csv += std::to_string(i);
    csv += ',';
    csv += std::to_string(predicted[i]);
    if (labelled) {
      csv += ',';
      csv += std::to_string(images.labels[i]);
      wrong += predicted[i] != images.labels[i];
    }
    csv += "\n";
  }
  return csv;
}

int run(int argc, char** argv) {
  Flags flags;
  declare_flags(flags);
  if (!parse_flags_or_help(flags, argc, argv, kUsage)) return 0;
  check(!flags.has("labels") || flags.has("images"), "--labels", "needs --images");
  const std::string out = output_file(flags, "predictions.csv");
  LoadedModel loaded = load_model_from_flags(flags);
  EquiVae<float>& model = *loaded.model;
  const EquiVaeConfig& config = model.config();
  std::string method = flags.get("method");
  if (method == "auto") method = config.semi_supervised() ? "classifier" : "distance";
  check(method == "distance" || method == "classifier", "--method",
        "expects distance, classifier or auto, got '" + method + "'");
  check(method == "distance" || config.semi_supervised(), "--method classifier",
        "the checkpoint is a supervised model, which has no classifier q(y|x)");

  // The images: explicit files, or the test split of the data flags.
  Dataset images;
  TrainingData data;
  const bool need_train = method == "distance";
  if (need_train || !flags.has("images")) data = load_training_data(flags, loaded);
  if (flags.has("images")) {
    images = flags.has("labels")
                 ? load_idx(flags.get("images"), flags.get("labels"), config.classes)
                 : load_idx_images(flags.get("images"));
  } else {
    images = data.splits.test;
  }
  model.check_image_size(images);

  std::vector<int32_t> predicted(size_t(images.n));
  int64_t centroid_count = 0;
  if (method == "distance") {
    const Dataset& centroids = centroid_images(data, config);
    centroid_count = centroids.n;
    const DistanceClassifier classifier = DistanceClassifier::fit(
        embed_dataset(model, centroids), centroids.labels, config.classes, config.latent_r);
    const std::vector<float> embedded = embed_dataset(model, images);
    for (int64_t i = 0; i < images.n; ++i)
      predicted[i] = classifier.predict(&embedded[size_t(i) * config.latent_r]);
  } else {
    model.classify(images.images.data(), images.n, predicted.data());
  }

  int64_t wrong = 0;
  const std::string csv = predictions_csv(images, predicted, wrong);
  create_output_file_directory(out);
  write_file_atomically(out, csv.data(), csv.size());

  std::printf("classified %lld images with the %s classifier", (long long)images.n,
              method == "distance" ? "distance" : "q(y|x)");
  if (method == "distance")
    std::printf(" (centroids from %lld %straining images)", (long long)centroid_count,
                data.subset ? "labelled " : "");
  std::printf("; wrote %s\n", out.c_str());
  if (!images.labels.empty())
    std::printf("error: %.2f%% (%lld of %lld)\n", 100.0 * double(wrong) / double(images.n),
                (long long)wrong, (long long)images.n);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("classify", run, argc, argv);
}
