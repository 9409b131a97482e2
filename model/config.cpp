#include "model/config.h"

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
}

std::string EquiVaeConfig::describe() const {
  std::ostringstream s;
  s << "input_dim=" << input_dim << " hidden=" << hidden << " latent_r=" << latent_r
    << " latent_v=" << latent_v << " classes=" << classes << " k=" << k << " m_max=" << m_max;
  if (semi_supervised()) s << " unlabelled=" << unlabelled << " classifier=" << hidden;
  return s.str();
}

}  // namespace equivae
