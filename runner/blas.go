package runner

import (
	"fmt"
	"os"
	"strings"
)

// oldKernels are OpenBLAS kernels written for CPUs without AVX2. OpenBLAS
// falls back to one when it does not recognise a CPU (a virtual machine
// that names itself "Intel Xeon Processor", say), and then runs several
// times slower than the CPU allows.
var oldKernels = map[string]bool{
	"Prescott": true, "Core2": true, "Penryn": true, "Dunnington": true, "Nehalem": true,
	"Atom": true, "Katmai": true, "Coppermine": true, "Northwood": true, "Banias": true,
	"Opteron": true, "Barcelona": true, "Bobcat": true, "Generic": true,
}

// blasAdvice says what to do when OpenBLAS runs an old kernel on a CPU
// with AVX2 or AVX-512, given /proc/cpuinfo's flags; "" when it does not.
// deepsim never sets OPENBLAS_CORETYPE itself: machines set it on purpose
// where some kernels compute wrong results, and that must stand.
func blasAdvice(core, flags string) string {
	if !oldKernels[core] || os.Getenv("OPENBLAS_CORETYPE") != "" {
		return ""
	}
	has := func(f string) bool { return strings.Contains(" "+flags+" ", " "+f+" ") }
	var want, what string
	switch {
	case has("avx512f") && has("avx512bw"):
		want, what = "SkylakeX", "AVX-512"
	case has("avx2"):
		want, what = "Haswell", "AVX2"
	default:
		return ""
	}
	return fmt.Sprintf("OpenBLAS runs its %s kernel on a CPU with %s: starting runner with OPENBLAS_CORETYPE=%s "+
		"made training steps 1.3-1.6x faster on such a machine (README, Performance); check that its results agree on yours",
		core, what, want)
}

// cpuFlags are the first CPU's flags in /proc/cpuinfo, or "".
func cpuFlags() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// hasBF16 tells whether a CPU's flags include bfloat16 arithmetic.
func hasBF16(flags string) bool {
	f := " " + flags + " "
	return strings.Contains(f, " avx512_bf16 ") || strings.Contains(f, " amx_bf16 ")
}
