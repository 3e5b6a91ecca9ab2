// The engine's one translation unit that includes libtorch. Parsing
// libtorch's headers costs about 20 s, so the engine's parts are compiled
// together, once. The parts are named as headers (.hpp) and included only
// here: cgo compiles no header on its own, and Go's build cache hashes
// headers, so that changing a part rebuilds the engine. A new part is
// included here.
#include "statedict.hpp"
#include "comparators.hpp"
#include "distributed.hpp"
#include "model.hpp"
