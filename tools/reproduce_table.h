#pragma once
// reproduce's table.md: each row's test errors as mean ± standard error over its seeds, beside
// the paper's figures.
#include <cstdint>
#include <string>
#include <vector>

#include "tools/paper_settings.h"
#include "tools/reproduce_plan.h"

namespace equivae::reproduce {

// table.md: mean ± standard error per row, beside the paper's figures.
std::string table_text(const Reproduction& rp, const PaperSettings& paper,
                       const std::vector<int64_t>& label_counts,
                       const std::vector<PlannedRun>& plan);

}  // namespace equivae::reproduce
