package measure

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// gaussian draws n rows of d values from N(shift, scale^2).
func gaussian(n, d int, shift, scale float64, seed uint64) Features {
	rng := rand.New(rand.NewPCG(seed, 1))
	f := make(Features, n)
	for i := range f {
		f[i] = make([]float64, d)
		for j := range f[i] {
			f[i][j] = shift + scale*rng.NormFloat64()
		}
	}
	return f
}

// fidByRoots is the Frechet distance computed the textbook way, apart from
// FID's SVD: d x d covariances, the symmetric root of S_a by its
// eigenvectors, and the trace of (S_a^(1/2) S_b S_a^(1/2))^(1/2).
func fidByRoots(t *testing.T, a, b Features) float64 {
	cov := func(f Features) (*mat.SymDense, []float64) {
		d := len(f[0])
		mean := make([]float64, d)
		for _, r := range f {
			for j := range r {
				mean[j] += r[j] / float64(len(f))
			}
		}
		s := mat.NewSymDense(d, nil)
		for i := range d {
			for j := i; j < d; j++ {
				var v float64
				for _, r := range f {
					v += (r[i] - mean[i]) * (r[j] - mean[j])
				}
				s.SetSym(i, j, v/float64(len(f)-1))
			}
		}
		return s, mean
	}
	root := func(s mat.Symmetric) *mat.Dense {
		var e mat.EigenSym
		if !e.Factorize(s, true) {
			t.Fatal("eigendecomposition failed")
		}
		var v mat.Dense
		e.VectorsTo(&v)
		vals := e.Values(nil)
		for i := range vals {
			vals[i] = math.Sqrt(math.Max(vals[i], 0))
		}
		var r mat.Dense
		r.Mul(&v, mat.NewDiagDense(len(vals), vals))
		r.Mul(&r, v.T())
		return &r
	}
	sa, ma := cov(a)
	sb, mb := cov(b)
	ra := root(sa)
	var m mat.Dense
	m.Mul(ra, sb)
	m.Mul(&m, ra)
	sym := mat.NewSymDense(len(ma), nil)
	for i := range len(ma) {
		for j := i; j < len(ma); j++ {
			sym.SetSym(i, j, (m.At(i, j)+m.At(j, i))/2)
		}
	}
	var dist float64
	for i := range ma {
		dist += (ma[i] - mb[i]) * (ma[i] - mb[i])
	}
	return dist + mat.Trace(sa) + mat.Trace(sb) - 2*mat.Trace(root(sym))
}

func TestFID(t *testing.T) {
	tests := []struct {
		name string
		a, b Features
	}{
		{"more rows than values", gaussian(40, 6, 0, 1, 1), gaussian(30, 6, 0.5, 2, 2)},
		{"fewer rows than values", gaussian(9, 20, 0, 1, 3), gaussian(12, 20, 0.2, 1.5, 4)},
		{"one set twice", gaussian(25, 8, 1, 1, 5), gaussian(25, 8, 1, 1, 5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FID(tc.a, tc.b)
			if err != nil {
				t.Fatal(err)
			}
			want := fidByRoots(t, tc.a, tc.b)
			if math.Abs(got-want) > 1e-8*math.Max(1, want) {
				t.Fatalf("FID %.12g, the textbook way %.12g", got, want)
			}
		})
	}
	a := gaussian(30, 4, 0, 1, 7)
	if d, _ := FID(a, a); math.Abs(d) > 1e-9 {
		t.Fatalf("FID of a set with itself is %g, want 0", d)
	}
	// One dimension: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
	x, y := Features{{0}, {2}}, Features{{1}, {5}}
	want := math.Pow(1-3, 2) + math.Pow(math.Sqrt(2)-math.Sqrt(8), 2)
	if d, _ := FID(x, y); math.Abs(d-want) > 1e-12 {
		t.Fatalf("FID of two 1-D pairs %.15g, want %.15g", d, want)
	}
}

// mmd2 against the same estimator written with kernel matrices.
func TestMMD2(t *testing.T) {
	a, b := gaussian(7, 3, 0, 1, 8), gaussian(7, 3, 0.3, 1, 9)
	dense := func(f Features) *mat.Dense {
		m := mat.NewDense(len(f), len(f[0]), nil)
		for i, r := range f {
			m.SetRow(i, r)
		}
		return m
	}
	kernel := func(x, y *mat.Dense) *mat.Dense {
		var k mat.Dense
		k.Mul(x, y.T())
		_, d := x.Dims()
		k.Apply(func(_, _ int, v float64) float64 { return math.Pow(v/float64(d)+1, 3) }, &k)
		return &k
	}
	A, B := dense(a), dense(b)
	kxx, kyy, kxy := kernel(A, A), kernel(B, B), kernel(A, B)
	m := 7.0
	sum := func(k *mat.Dense) float64 { return mat.Sum(k) }
	want := (sum(kxx)-mat.Trace(kxx)+sum(kyy)-mat.Trace(kyy))/(m*(m-1)) - 2*sum(kxy)/(m*m)
	if got := mmd2(a, b); math.Abs(got-want) > 1e-12 {
		t.Fatalf("mmd2 %.15g, with kernel matrices %.15g", got, want)
	}
}

func TestKID(t *testing.T) {
	same, other := gaussian(200, 16, 0, 1, 10), gaussian(200, 16, 0, 1, 11)
	shifted := gaussian(200, 16, 0.5, 1, 12)
	near, err := KID(same, other, 50, 1)
	if err != nil {
		t.Fatal(err)
	}
	far, err := KID(same, shifted, 50, 1)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(near.KID) > 3*near.Std {
		t.Errorf("KID of two draws of one distribution %g, beyond 3 std (%g)", near.KID, near.Std)
	}
	if far.KID < 10*far.Std || far.KID <= near.KID {
		t.Errorf("KID of shifted draws %g (std %g), of one distribution's %g: want it far above", far.KID, far.Std, near.KID)
	}
	again, _ := KID(same, shifted, 50, 1)
	if again != far {
		t.Errorf("KID under one seed: %+v, then %+v", far, again)
	}
	if near.SubsetSize != 100 || near.Subsets != 50 {
		t.Errorf("subsets %d of %d rows, want 50 of 100", near.Subsets, near.SubsetSize)
	}
	if _, err := KID(same[:3], other, 5, 1); err == nil {
		t.Error("KID of a 3-row set: no error")
	}
}
