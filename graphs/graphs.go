// Package graphs holds the DeePSiM networks and losses, written in C++ against
// libtorch, and their Go binding. It is the project's only cgo package.
//
// Every call crosses the cgo boundary once per batch: a training step is one
// call from batch in to losses out, and inference is one call per batch.
// Handles are opaque and have an explicit Close; finalizers are a safety net.
package graphs

/*
#cgo CXXFLAGS: -std=c++17 -O2 -I/usr/include/torch/csrc/api/include -Wno-deprecated-declarations
#cgo LDFLAGS: -ltorch -ltorch_cpu -lc10 -lstdc++
#include <stdlib.h>
#include "deepsim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// errorFrom turns a C error string into a Go error, freeing it.
func errorFrom(op string, msg *C.char) error {
	if msg == nil {
		return nil
	}
	defer C.ds_free(unsafe.Pointer(msg))
	return fmt.Errorf("%s: %s", op, C.GoString(msg))
}

// takeBytes copies a malloc'd buffer into Go memory and frees it.
func takeBytes(buf *C.char, n C.int64_t) []byte {
	defer C.ds_free(unsafe.Pointer(buf))
	return C.GoBytes(unsafe.Pointer(buf), C.int(n))
}

// SetThreads sets the number of threads libtorch uses for intra-op work.
func SetThreads(n int) { C.ds_set_num_threads(C.int32_t(n)) }
