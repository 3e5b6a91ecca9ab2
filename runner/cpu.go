package runner

import (
	"os"
	"strings"
)

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
