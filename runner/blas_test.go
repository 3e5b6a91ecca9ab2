package runner

import (
	"strings"
	"testing"
)

func TestBLASAdvice(t *testing.T) {
	t.Setenv("OPENBLAS_CORETYPE", "")
	tests := []struct{ core, flags, want string }{
		{"Prescott", "fpu sse2 avx avx2 avx512f avx512bw", "OPENBLAS_CORETYPE=SkylakeX"},
		{"Prescott", "fpu sse2 avx avx2 fma", "OPENBLAS_CORETYPE=Haswell"},
		{"Prescott", "fpu sse2 sse3", ""},           // an old kernel for an old CPU
		{"Cooperlake", "avx2 avx512f avx512bw", ""}, // the CPU's own kernel
		{"", "avx2", ""}, // not OpenBLAS
	}
	for _, tc := range tests {
		got := blasAdvice(tc.core, tc.flags)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s on %q: %q, want %q", tc.core, tc.flags, got, tc.want)
		}
	}
	t.Setenv("OPENBLAS_CORETYPE", "Prescott") // set on purpose: left alone
	if got := blasAdvice("Prescott", "avx2"); got != "" {
		t.Errorf("with OPENBLAS_CORETYPE set: %q", got)
	}
}
