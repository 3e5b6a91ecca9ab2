package runner

import (
	"os"
	"strings"
)

// cpuinfo is the value of the first CPU's field key in /proc/cpuinfo, or "".
func cpuinfo(key string) string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// cpuFlags are the first CPU's flags, or "".
func cpuFlags() string { return cpuinfo("flags") }

// cpuModel is the first CPU's model name, or "".
func cpuModel() string { return cpuinfo("model name") }

// hasBF16 tells whether a CPU's flags include bfloat16 arithmetic.
func hasBF16(flags string) bool {
	f := " " + flags + " "
	return strings.Contains(f, " avx512_bf16 ") || strings.Contains(f, " amx_bf16 ")
}
