// One training step of the double-precision CPU plan, written out for an independent
// re-computation in PyTorch (check_step.py beside this file): the initial weights, the batch
// as the plan sees it (its input rows and pooling sets), the sampled noise ε, and the
// engine's loss terms and gradients.
//
//   dump_step DIR supervised|semi|svhn|svhn-semi [STEPS]
//
// DIR/meta.json: the configuration, log p(y) and the engine's StepMetrics of each step;
// DIR/stepI/*.npy (float64 unless said) for step I: x [R, D] (the rows through encoder and
// decoder), xq [B + U, D] (semi: the classifier's rows), offsets [R + 1] and members (int32:
// each row's pooling set, indices of labelled rows), eps [R, d_v]; per parameter, in the
// checkpoint's names and shapes (dense weights [in, out]): NAME.npy (initial), NAME.grad.npy
// (step 0's gradient) and, with STEPS > 1, NAME.final.npy (after STEPS Adam updates).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kernels/philox.h"
#include "model/config.h"
#include "model/equivae.h"
#include "model/idx_dataset.h"
#include "model/sampler.h"
#include "model/subsets.h"
#include "runtime/backend.h"
#include "runtime/error.h"
#include "runtime/npy_file.h"

namespace {

using namespace equivae;

// Rows of data's images (float, as the plan reads them) in double.
void append_rows(std::vector<double>& out, const Dataset& data, int32_t row, int copies = 1) {
  const float* p = data.images.data() + size_t(row) * size_t(data.dim);
  for (int c = 0; c < copies; ++c) out.insert(out.end(), p, p + data.dim);
}

// 400 SVHN-shaped images of uniform pixels (Philox), labels i mod 10.
Dataset made_up_svhn() {
  Dataset d;
  d.n = 400;
  d.rows = d.cols = 32;
  d.channels = 3;
  d.dim = 3 * 32 * 32;
  d.source = "made-up 3x32x32 images";
  d.images.resize(size_t(d.n) * size_t(d.dim));
  d.labels.resize(size_t(d.n));
  for (int64_t i = 0; i < d.n; ++i) {
    d.labels[size_t(i)] = int32_t(i % 10);
    for (int j = 0; j < d.dim; ++j)
      d.images[size_t(i) * size_t(d.dim) + size_t(j)] =
          philox_uniform<float>(5, uint64_t(i), 0, uint32_t(j));
  }
  return d;
}

const char* const kImages = EQUIVAE_SOURCE_DIR "/data/mnist10k-images-idx3-ubyte.gz";
const char* const kLabels = EQUIVAE_SOURCE_DIR "/data/mnist10k-labels-idx1-ubyte.gz";

int run(const std::string& dir, const std::string& mode, int steps) {
  check(mode == "supervised" || mode == "semi" || mode == "svhn" || mode == "svhn-semi",
        "dump_step", "mode is supervised, semi, svhn or svhn-semi");
  check(steps >= 1 && steps <= 100, "dump_step", "steps is 1 to 100");
  const bool svhn = mode.rfind("svhn", 0) == 0, semi = mode == "semi" || mode == "svhn-semi";
  std::filesystem::create_directories(dir);
  const Dataset digits = svhn ? made_up_svhn() : load_idx(kImages, kLabels).slice(0, 8000);
  // The reference architecture; semi-supervised as the paper (8-D latents, m_max 4) with
  // U = 100 and weights α, w ≠ 1 so that each term's scale is checked; SVHN's conv model
  // (Gaussian likelihood) with k = 4 (B = 40) to keep the double-precision step short.
  EquiVaeConfig config = svhn ? svhn_config() : EquiVaeConfig{};
  if (svhn) config.k = 4;
  config.seed = 11;
  LabelledSplit split;
  if (semi) {  // SVHN: 40 labels, 8 unlabelled items a step (the conv trunks in double)
    split = split_labelled(digits, svhn ? 40 : 100, config.seed);
    if (!svhn) config.latent_r = config.latent_v = 8;
    config.m_max = svhn ? 3 : 4;
    config.k = svhn ? 4 : 10;
    config.unlabelled = svhn ? 8 : 100;
    config.classifier_weight = 1.3;
    config.unlabelled_weight = 0.7;
  }
  const Dataset& labelled = semi ? split.labelled : digits;
  const int C = config.classes, B = config.batch(), U = semi ? config.unlabelled : 0;
  auto backend = make_cpu_backend<double>(1);
  EquiVae<double> model(config, *backend);
  std::vector<double> log_prior(static_cast<size_t>(C));
  for (int c = 0; c < C; ++c) log_prior[size_t(c)] = std::log(0.05 + 0.01 * c);  // not uniform
  model.set_log_prior(log_prior);

  BalancedBatchSampler sampler(labelled.labels, C, config.k, config.m_max, config.seed);
  std::unique_ptr<UnlabelledSampler> unlabelled_sampler;
  if (semi)
    unlabelled_sampler = std::make_unique<UnlabelledSampler>(split.unlabelled.n, U, C, config.k,
                                                             config.m_max, config.seed);
  const int R = B + C * U, D = labelled.dim, dv = config.latent_v;
  std::vector<StepMetrics> metrics;
  for (int s = 0; s < steps; ++s) {
    const uint64_t step = 3 + uint64_t(s);
    Batch batch;
    sampler.sample(step, batch);
    if (semi) unlabelled_sampler->sample(step, batch);
    model.load_batch(batch, labelled, semi ? &split.unlabelled : nullptr);
    metrics.push_back(model.forward(step));
    model.backward();

    // The plan's rows: labelled, then each unlabelled item once per label (row B + u·C + y).
    const std::string at = dir + "/step" + std::to_string(s);
    std::filesystem::create_directories(at);
    std::vector<double> x, xq;
    for (int32_t row : batch.rows) append_rows(x, labelled, row);
    for (int32_t row : batch.unlabelled_rows) append_rows(x, split.unlabelled, row, C);
    write_npy(at + "/x.npy", x, {R, D});
    if (semi) {
      for (int32_t row : batch.rows) append_rows(xq, labelled, row);
      for (int32_t row : batch.unlabelled_rows) append_rows(xq, split.unlabelled, row);
      write_npy(at + "/xq.npy", xq, {B + U, D});
    }
    write_npy(at + "/offsets.npy", batch.offsets, {int64_t(batch.offsets.size())});
    write_npy(at + "/members.npy", batch.members, {int64_t(batch.members.size())});
    // ε as the plan drew it: the same op with μ = 0, log σ² = 0 gives v = ε.
    std::vector<double> zeros(size_t(R) * 2 * dv, 0.0), v(size_t(R) * dv), eps(v.size()), kl(R);
    backend->sample_kl_forward(v.data(), eps.data(), kl.data(), zeros.data(), R, dv, config.seed,
                               step, 0);
    write_npy(at + "/eps.npy", eps, {R, dv});

    // The initial weights and the first step's gradients; with several steps, Adam moves on.
    for (const NamedParameter<double>& p : model.named_parameters()) {
      const std::vector<double> value(p.value, p.value + p.size), grad(p.grad, p.grad + p.size);
      if (s == 0) write_npy(dir + "/" + p.name + ".npy", value, p.shape);
      if (s == 0) write_npy(dir + "/" + p.name + ".grad.npy", grad, p.shape);
    }
    if (steps > 1) model.apply_adam();
  }
  if (steps > 1)  // the weights after the steps' Adam updates
    for (const NamedParameter<double>& p : model.named_parameters())
      write_npy(dir + "/" + p.name + ".final.npy", std::vector<double>(p.value, p.value + p.size),
                p.shape);

  std::ofstream meta(dir + "/meta.json");
  char line[512];
  std::snprintf(line, sizeof line,
                "{\"mode\": \"%s\", \"B\": %d, \"U\": %d, \"C\": %d, \"k\": %d, \"m_max\": %d, "
                "\"alpha\": %.17g, \"w\": %.17g, \"lr\": %.17g, \"log_prior\": [",
                mode.c_str(), B, U, C, config.k, config.m_max, config.classifier_weight,
                config.unlabelled_weight, config.lr);
  meta << line;
  for (int c = 0; c < C; ++c) {
    std::snprintf(line, sizeof line, "%s%.17g", c ? ", " : "", log_prior[size_t(c)]);
    meta << line;
  }
  meta << "], ";
  // MNIST: the digits the batches came from, for check_step.py to check each row against the
  // files themselves (an independent reading, not the engine's loader or sampler).
  if (!svhn)
    meta << "\"images\": \"" << kImages << "\", \"labels\": \"" << kLabels
         << "\", \"digits\": " << digits.n << ", ";
  meta << "\"steps\": [";
  for (size_t i = 0; i < metrics.size(); ++i) {
    const StepMetrics& m = metrics[i];
    std::snprintf(line, sizeof line,
                  "%s{\"recon\": %.17g, \"kl\": %.17g, \"classifier_nll\": %.17g, "
                  "\"unlabelled_bound\": %.17g}",
                  i ? ", " : "", m.recon, m.kl, m.classifier_nll, m.unlabelled_bound);
    meta << line;
  }
  meta << "]}\n";
  check(meta.good(), dir + "/meta.json", "write failed");
  std::printf("dump_step: %d %s step(s) of B = %d (R = %d rows) written to %s\n", steps,
              mode.c_str(), B, R, dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 4) {
    std::fprintf(stderr, "usage: dump_step DIR supervised|semi|svhn|svhn-semi [STEPS]\n");
    return 2;
  }
  try {
    return run(argv[1], argv[2], argc == 4 ? std::atoi(argv[3]) : 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dump_step: %s\n", e.what());
    return 1;
  }
}
