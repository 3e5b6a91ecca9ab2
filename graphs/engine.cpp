// The engine's one translation unit that includes libtorch. Parsing
// libtorch's headers costs about 20 s, so the engine's parts are compiled
// together, once. The parts are named as headers (.hpp) and included only
// here: cgo compiles no header on its own, and Go's build cache hashes
// headers, so that changing a part rebuilds the engine. A new part is
// included here, after the parts it uses.
#include "device.hpp"
#include "statedict.hpp"
#include "comparators.hpp"
#include "distributed.hpp"
#include "losses.hpp"
#include "update.hpp"
#include "tasks.hpp"
#include "checkpoint.hpp"
#include "model.hpp"
#include "selftest.hpp"
