package graphs

import "testing"

// The up-convolution is ConvTranspose2d(in, out, 4, stride 2, padding 1):
// the same output and the same gradients, in both memory layouts, for
// square and oblong inputs down to 1 x 1.
func TestUpConvIsConvTranspose2d(t *testing.T) {
	for _, c := range []struct {
		name             string
		in, out, n, h, w int
		channelsLast     bool
	}{
		{"square", 8, 5, 2, 6, 6, false},
		{"square channels-last", 8, 5, 2, 6, 6, true},
		{"oblong", 3, 4, 3, 5, 7, false},
		{"oblong channels-last", 3, 4, 3, 5, 7, true},
		{"1x1", 4, 2, 1, 1, 1, false},
		{"generator's widths", 64, 32, 2, 8, 8, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := CheckUpConv(c.in, c.out, c.n, c.h, c.w, 7, c.channelsLast)
			if err != nil {
				t.Fatal(err)
			}
			for i, what := range []string{"output", "input gradient", "weight gradient", "bias gradient"} {
				if e[i] > 1e-10 {
					t.Errorf("%s differs from ConvTranspose2d's by %g", what, e[i])
				}
			}
		})
	}
}
