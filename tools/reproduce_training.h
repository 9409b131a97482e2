#pragma once
// reproduce's training: each planned run's EquiVAE, then its classifiers, trained and tested,
// its row written to runs.csv once it is done; a stop on request says how to continue.
#include <vector>

#include "tools/reproduce_plan.h"
#include "tools/reproduce_progress.h"

namespace equivae::reproduce {

// runs.csv, atomically: the header and the rows done so far, in the table's order. Written
// before the first run trains too, so an interrupted reproduction always leaves one that
// --reuse reads.
void write_runs(const Reproduction& rp, const std::vector<PlannedRun>& plan);

// Trains every planned run not yet done, rewriting runs.csv after each; a run's checkpoint is
// deleted once its row is there.
void train_runs(const Reproduction& rp, std::vector<PlannedRun>& plan, Progress& progress);

}  // namespace equivae::reproduce
