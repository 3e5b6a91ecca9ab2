// The engine's one translation unit that includes libtorch. Parsing
// libtorch's headers costs about 20 s, and Go rebuilds every C++ file of a
// package whenever any of them changes, so the engine's parts are compiled
// together, once. Each part carries "//go:build ignore" so that cgo does
// not also compile it on its own; a new part is included here.
#include "statedict.cpp"
#include "comparators.cpp"
#include "distributed.cpp"
#include "model.cpp"
