// Error bits that kernels OR into a device-side int32 flag word instead of synchronising with
// the host. The Python ops layer (fkdiff/ops/_flags.py) turns them into ValueErrors naming the
// argument; keep the two lists identical.
#pragma once

namespace fkdiff {

enum ErrorFlag : int {
  kFlagLogWeightNaN = 1,        // log_weights holds NaN
  kFlagLogWeightPosInf = 2,     // log_weights holds +inf
  kFlagLogWeightAllZero = 4,    // some population has every log-weight -inf
  kFlagAncestorRange = 8,       // an ancestor index outside [0, num_parents)
  kFlagPotentialNaN = 16,       // the potential came out NaN (NaN in x or its targets)
  kFlagGradientNonFinite = 32,  // a Langevin gradient row has a non-finite norm
};

}  // namespace fkdiff
