#pragma once
// The model flags train_mnist, train_svhn and reproduce share, and the EquiVAE configuration
// they select: the paper's settings for the data set (tools/paper_settings.h) where a flag
// says "auto" or is not given.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/idx_dataset.h"
#include "runtime/error.h"
#include "runtime/flags.h"
#include "tools/paper_settings.h"

namespace equivae {

// papers: the data sets the tool may meet (their "auto" values go into the help).
inline void declare_model_flags(Flags& f, const std::vector<PaperSettings>& papers) {
  std::string latent_auto, m_max_auto;
  const PaperSettings* conv = nullptr;
  for (const PaperSettings& p : papers) {
    const std::string of = papers.size() > 1 ? p.name + ": " : "";
    const std::string sep = latent_auto.empty() ? "" : "; ";
    latent_auto += sep + of + std::to_string(p.latent_sup) + " supervised, " +
                   std::to_string(p.latent_semi) + " semi-supervised";
    m_max_auto += sep + of + std::to_string(p.m_max_sup) + " supervised, " +
                  std::to_string(p.m_max_semi) + " semi-supervised";
    if (p.base.convolutional()) conv = &p;
  }
  f.add("k", "16",
        "items per class in a labelled batch (batch = 10 k; capped by the labels per "
        "class)");
  f.add("unlabelled", "100",
        "semi-supervised: unlabelled items per step (each paired with all 10 labels)");
  f.add("unlabelled-weight", "1",
        "semi-supervised: weight w of the unlabelled term's batch mean against the labelled "
        "term's (eq. 7's sum over items: w = unlabelled / labelled examples)");
  f.add("classifier-weight", "1",
        "semi-supervised: weight α of the labelled −log q(y|x) term (the paper: 1)");
  f.add("latent", "auto", "size of both latents r and v (auto, as the paper: " + latent_auto + ")");
  f.add("hidden", "512", "width of every hidden layer (and of the benchmark classifier's)");
  f.add("m-max", "auto",
        "r pools m ~ U{1..m_max} other same-class items (auto, as the paper: " + m_max_auto + ")");
  f.add("inference-chunk", std::to_string(EquiVaeConfig{}.inference_chunk),
        "images per chunk of f_inv and q(y|x) at evaluation (each epoch's validation, the test "
        "error); 0: the batch's rows, so each image's f_inv equals a training step's forward "
        "bit for bit (convolutional networks always run the batch's rows)");
  if (conv)
    f.add("conv-width", std::to_string(conv->base.conv_width),
          (papers.size() > 1 ? conv->name + ": " : std::string()) +
              "channels of the first conv layer (then 2x and 4x)");
}

// The configuration for training on `train` with `labels` labelled examples (0: supervised,
// every label). Flags only some tools declare (--latent-r, --latent-v) count when given.
inline EquiVaeConfig model_config(const Flags& f, const PaperSettings& paper, const Dataset& train,
                                  int64_t labels) {
  EquiVaeConfig c = base_config_for(paper, train);
  const bool semi = labels > 0;
  c.k = int(f.get_int("k", 2, 4096));
  // With few labels a class holds fewer than k: its whole labelled set forms the segment.
  if (semi) {
    check(labels / c.classes >= 2, "--labels",
          std::to_string(labels) + " labelled examples are " + std::to_string(labels / c.classes) +
              " per class; pooling needs at least 2 per class (--labels " +
              std::to_string(2 * c.classes) + " or more)");
    c.k = int(std::min<int64_t>(c.k, labels / c.classes));
  }
  const int latent = f.get("latent") == "auto" ? (semi ? paper.latent_semi : paper.latent_sup)
                                               : int(f.get_int("latent", 1, 4096));
  c.latent_r = f.has("latent-r") ? int(f.get_int("latent-r", 1, 4096)) : latent;
  c.latent_v = f.has("latent-v") ? int(f.get_int("latent-v", 1, 4096)) : latent;
  c.hidden = int(f.get_int("hidden", 1, 65536));
  c.m_max = f.get("m-max") == "auto" ? (semi ? paper.m_max_semi : paper.m_max_sup)
                                     : int(f.get_int("m-max", 1, 4096));
  // The samplers' cap (model/sampler.h), on a value asked for or the paper's (which few
  // labels, or a small --k, bring under it): said, not applied silently.
  if (c.m_max > c.k - 1)
    std::fprintf(stderr,
                 "note: %s %d: a labelled row pools at most the k - 1 = %d other items of "
                 "its class in the batch%s\n",
                 f.get("m-max") == "auto" ? "m_max (the paper's)" : "--m-max", c.m_max, c.k - 1,
                 semi ? " (an unlabelled row at most k)" : "");
  if (c.convolutional()) c.conv_width = int(f.get_int("conv-width", 1, 4096));
  c.inference_chunk = int(f.get_int("inference-chunk", 0, kMaxInferenceChunk));
  // Parsed either way, so a bad value is refused; applied only with labels.
  const int unlabelled = int(f.get_int("unlabelled", 1, 100000));
  const double unlabelled_weight = f.get_double("unlabelled-weight", 0, 1e6);
  const double classifier_weight = f.get_double("classifier-weight", 0, 1e6);
  if (semi) {
    c.unlabelled = unlabelled;
    c.unlabelled_weight = unlabelled_weight;
    c.classifier_weight = classifier_weight;
  } else {
    for (const char* flag : {"unlabelled", "unlabelled-weight", "classifier-weight"})
      if (f.has(flag))
        std::fprintf(stderr,
                     "note: --%s applies to semi-supervised runs (--labels N); this run "
                     "is supervised\n",
                     flag);
  }
  return c;
}

}  // namespace equivae
