// Package graphs holds the DeePSiM networks and losses, written in C++ against
// libtorch, and their Go binding. It is the project's only cgo package.
//
// Every call crosses the cgo boundary once per batch: a training step is one
// call from batch in to losses out, and inference is one call per batch.
// Handles are opaque and have an explicit Close; finalizers are a safety net.
package graphs

/*
#cgo CXXFLAGS: -std=c++17 -O2 -I/usr/include/torch/csrc/api/include -DUSE_C10D_GLOO -Wno-deprecated-declarations
#cgo LDFLAGS: -ltorch -ltorch_cpu -lc10 -lstdc++
#include <stdlib.h>
#include "deepsim.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// owned gives a handle a finalizer that closes it: a safety net only, for
// a handle its user forgot to Close.
func owned[H interface{ Close() }](h H) H {
	runtime.SetFinalizer(h, func(h H) { h.Close() })
	return h
}

// release frees the C object *p once, with free, and drops owner's
// finalizer: the body of every handle's Close.
func release[P comparable](owner any, p *P, free func(P)) {
	var closed P
	if *p != closed {
		free(*p)
		*p = closed
		runtime.SetFinalizer(owner, nil)
	}
}

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

// SetThreads sets the number of threads libtorch uses for intra-op work;
// 0 means one per CPU this process may run on. libtorch's own default is
// half the logical CPUs, which on a 2-vCPU machine leaves one idle.
func SetThreads(n int) {
	if n <= 0 {
		n = runtime.NumCPU() // the affinity mask's CPUs
	}
	C.ds_set_num_threads(C.int32_t(n))
}

// Threads is the number of intra-op threads libtorch uses.
func Threads() int { return int(C.ds_num_threads()) }

// BLAS says which kernel libtorch's OpenBLAS runs and how it was built;
// both are "" when the BLAS is not OpenBLAS.
func BLAS() (core, config string) {
	var cc, cfg *C.char
	C.ds_blas_info(&cc, &cfg)
	return C.GoString(cc), C.GoString(cfg)
}
