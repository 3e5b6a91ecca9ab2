package runner

import "testing"

// Every row of a batch goes to exactly one rank, in order, and the ranks'
// shares differ by at most one row.
func TestRowsCoverTheBatchOnce(t *testing.T) {
	for _, tc := range []struct{ n, w int }{{4, 2}, {4, 3}, {4, 4}, {16, 3}, {5, 2}, {7, 7}} {
		next := 0
		least, most := tc.n, 0
		for r := range tc.w {
			lo, hi := rows(tc.n, r, tc.w)
			if lo != next || hi < lo {
				t.Fatalf("n=%d w=%d: rank %d has [%d, %d), want it to start at %d", tc.n, tc.w, r, lo, hi, next)
			}
			next = hi
			least, most = min(least, hi-lo), max(most, hi-lo)
		}
		if next != tc.n || most-least > 1 {
			t.Fatalf("n=%d w=%d: rows end at %d, shares %d..%d", tc.n, tc.w, next, least, most)
		}
	}
}
