// One malloc arena for every thread, unless MALLOC_ARENA_MAX says
// otherwise. By default glibc gives each thread that allocates an arena of
// its own; tensors freed on another thread than the one that made them
// then fragment the arenas, and a training process's peak memory swings by
// a fifth from run to run (make bench-data). This runs as the program
// loads, before Go or libtorch start a thread: set later, the limit would
// leave the arenas already made in use. The engine sets malloc's other
// knobs (model.hpp) when it builds a model.
#include <malloc.h>
#include <stdlib.h>

__attribute__((constructor)) static void deepsim_one_malloc_arena(void) {
  if (getenv("MALLOC_ARENA_MAX") == NULL) mallopt(M_ARENA_MAX, 1);
}
