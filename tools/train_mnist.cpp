// train_mnist: trains the supervised EquiVAE on MNIST-format data (the bundled
// 10,000 digits by default) on the CPU or a CUDA GPU and reports the distance-classifier error.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "model/config.h"
#include "model/data_splits.h"
#include "model/equivae.h"
#include "model/evaluate.h"
#include "model/idx_dataset.h"
#include "model/subsets.h"
#include "model/trainer.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "tools/data_flags.h"
#include "tools/tool_main.h"

namespace {

using namespace equivae;

constexpr const char* kUsage =
    "usage: train_mnist [flags]\n"
    "Trains EquiVAE (Feige, ICML 2019), supervised or with --labels N semi-supervised, and prints "
    "the distance-classifier test error (and q(y|x)'s, semi-supervised).\nWithout data flags it "
    "uses the bundled 10,000 MNIST digits: the first 8,000 train, "
    "the last 2,000 test.";

void declare_flags(Flags& f) {
  declare_data_flags(f,
                     "last N training examples held out for validation (auto: 0 for the bundled "
                     "digits, 5000 for a data directory, as the paper's 55k/5k split)");
  f.add("epochs", "40", "training epochs");
  f.add("k", "16", "items per class in a batch (batch = 10 k)");
  f.add("labels", "0",
        "semi-supervised: keep the labels of only N training examples (N/10 per class, chosen "
        "by --seed), the rest train unlabelled; 0: supervised");
  f.add("unlabelled", "100",
        "semi-supervised: unlabelled items per step (each paired with all 10 labels)");
  f.add("unlabelled-weight", "1", "semi-supervised: weight of the unlabelled term's batch mean");
  f.add("classifier-weight", "1",
        "semi-supervised: weight α of the labelled −log q(y|x) term (the paper: 1)");
  f.add("latent", "auto",
        "size of both latents r and v (auto: 16 supervised, 8 semi-supervised, as the paper)");
  f.add("latent-r", "", "size of the invariant latent r");
  f.add("latent-v", "", "size of the equivariant latent v");
  f.add("hidden", "512", "width of every hidden layer");
  f.add("m-max", "auto",
        "r pools m ~ U{1..m_max} other same-class items (auto: 7 supervised, 4 semi-supervised)");
  f.add("lr", "0.001", "Adam learning rate");
  f.add("seed", "1", "random seed (same seed, same numbers)");
  f.add("threads", "0", "CPU threads for GEMM and OpenMP (0: all cores)");
  f.add("device", "auto",
        "cpu or cuda (auto: cuda when this build has the CUDA backend and a GPU is present, "
        "else cpu)");
  f.add("strict-fp32", "", "cuda: plain FP32 GEMMs (default: TF32 tensor cores allowed)", true);
  f.add("out", "runs/mnist",
        "output directory: metrics.csv, metrics.jsonl, checkpoint.safetensors (rewritten "
        "atomically after every epoch)");
  f.add("resume", "",
        "continue the run that wrote this checkpoint (same flags and data, else refused), until "
        "--epochs in total; the result equals an uninterrupted run bit for bit (same device and "
        "--threads)");
  f.add("log-json", "",
        "write the per-epoch JSON lines here instead of OUT/metrics.jsonl ('-': stdout)");
  f.add("quiet", "", "no progress lines (errors are still printed)", true);
  f.add("help", "", "show this help", true);
}

EquiVaeConfig config_from(const Flags& f, const Dataset& train) {
  EquiVaeConfig c;
  c.input_dim = train.dim;
  c.classes = train.num_classes;
  const int64_t labels = f.get_int("labels", 0, train.n);
  const bool semi = labels > 0;
  c.k = int(f.get_int("k", 2, 4096));
  // With few labels a class holds fewer than k: its whole labelled set forms the segment.
  if (semi) c.k = int(std::min<int64_t>(c.k, labels / c.classes));
  const int latent =
      f.get("latent") == "auto" ? (semi ? 8 : 16) : int(f.get_int("latent", 1, 4096));
  c.latent_r = f.has("latent-r") ? int(f.get_int("latent-r", 1, 4096)) : latent;
  c.latent_v = f.has("latent-v") ? int(f.get_int("latent-v", 1, 4096)) : latent;
  c.hidden = int(f.get_int("hidden", 1, 65536));
  c.m_max = f.get("m-max") == "auto" ? (semi ? 4 : 7) : int(f.get_int("m-max", 1, 4096));
  if (semi) {
    c.unlabelled = int(f.get_int("unlabelled", 1, 100000));
    c.unlabelled_weight = f.get_double("unlabelled-weight", 0, 1e6);
    c.classifier_weight = f.get_double("classifier-weight", 0, 1e6);
  }
  c.lr = f.get_double("lr", 1e-8, 10);
  c.seed = uint64_t(f.get_int("seed", 0, INT64_MAX));
  c.validate();
  return c;
}

int run(int argc, char** argv) {
  Flags flags;
  declare_flags(flags);
  if (!parse_flags_or_help(flags, argc, argv, kUsage)) return 0;
  const auto start = std::chrono::steady_clock::now();
  const DataSplits data = load_data(flags, 0);
  const EquiVaeConfig config = config_from(flags, data.train);
  const int threads = int(flags.get_int("threads", 0, 1024));
  TrainOptions options;
  options.epochs = int(flags.get_int("epochs", 1, 100000));
  options.out_dir = flags.get("out");
  options.quiet = flags.get_switch("quiet");
  options.resume_from = flags.get("resume");
  options.json_log = flags.get("log-json");

  const int64_t labels = flags.get_int("labels", 0, data.train.n);
  LabelledSplit split;
  if (labels > 0) split = split_labelled(data.train, labels, config.seed);
  const Dataset& labelled = labels > 0 ? split.labelled : data.train;
  const Dataset* unlabelled = labels > 0 ? &split.unlabelled : nullptr;

  std::string device = flags.get("device");
  if (device == "auto") device = cuda_available() ? "cuda" : "cpu";
  check(device == "cpu" || device == "cuda", "--device",
        "expects cpu, cuda or auto, got '" + device + "'");
  std::unique_ptr<Backend<float>> backend;
  if (device == "cuda") {
    CudaBackendOptions cuda;
    cuda.strict_fp32 = flags.get_switch("strict-fp32");
    try {  // says why: no GPU, no driver, or a build without the CUDA backend
      backend = make_cuda_backend<float>(cuda);
    } catch (const Error& e) {
      throw Error("--device cuda", std::string(e.what()) + " (use --device cpu)");
    }
  } else {
    backend = make_cpu_backend<float>(threads);
  }
  EquiVae<float> model(config, *backend);
  if (!options.quiet) {
    std::fprintf(stderr, "train %lld", (long long)data.train.n);
    if (unlabelled)
      std::fprintf(stderr, " (%lld labelled, %lld unlabelled)", (long long)labelled.n,
                   (long long)unlabelled->n);
    std::fprintf(stderr, "  validation %lld  test %lld  (%s)\n", (long long)data.validation.n,
                 (long long)data.test.n, data.train.source.c_str());
    std::fprintf(stderr, "model %s  B=%d  %s backend\n", config.describe().c_str(), config.batch(),
                 backend->name().c_str());
    if (!options.resume_from.empty())
      std::fprintf(stderr, "resuming from %s\n", options.resume_from.c_str());
  }
  train(model, labelled, unlabelled, data.validation.n ? &data.validation : nullptr, options);

  // The distance classifier's centroids come from the labelled examples only.
  const double error = distance_classifier_error(model, labelled, data.test);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("test error (distance classifier): %.2f%% on %lld images  [%.1f s]\n", 100 * error,
              (long long)data.test.n, seconds);
  if (unlabelled)
    std::printf("test error (q(y|x)): %.2f%% on %lld images\n",
                100 * classifier_error(model, data.test), (long long)data.test.n);
  if (!options.out_dir.empty()) {
    const std::string& out = options.out_dir;
    const std::string json = options.json_log.empty() ? out + "/metrics.jsonl" : options.json_log;
    std::printf("wrote %s/metrics.csv, %s and %s/checkpoint.safetensors\n", out.c_str(),
                json == "-" ? "the JSON lines to stdout" : json.c_str(), out.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return equivae::run_tool("train_mnist", run, argc, argv);
}
