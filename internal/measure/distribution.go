package measure

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
)

// Features are n feature vectors of one length, one per image.
type Features [][]float64

// KIDResult is the kernel inception distance of two sets and its spread
// over the subsets it averages.
type KIDResult struct {
	KID float64 // the mean of the subsets' unbiased MMD^2
	Std float64 // their standard deviation, as torch-fidelity reports it
	// Subsets of SubsetSize rows each, drawn without replacement.
	Subsets, SubsetSize int
}

// KID is the kernel inception distance (Binkowski et al., 2018) as
// clean-fid and torch-fidelity compute it: the unbiased squared MMD with
// the polynomial kernel k(x, y) = (x.y/d + 1)^3, averaged over subsets
// drawn without replacement under seed. A subset holds half the smaller
// set (at most 1000 rows), so that the subsets differ and their spread
// means something.
func KID(a, b Features, subsets int, seed uint64) (KIDResult, error) {
	if err := sameWidth(a, b); err != nil {
		return KIDResult{}, err
	}
	m := min(len(a), len(b)) / 2
	if m < 2 || subsets < 1 {
		return KIDResult{}, fmt.Errorf("KID needs at least 4 rows a set and a subset (have %d, %d; %d subsets)", len(a), len(b), subsets)
	}
	m = min(m, 1000)
	rng := rand.New(rand.NewPCG(seed, 0x4b4944))
	mmds := make([]float64, subsets)
	for s := range mmds {
		x, y := rng.Perm(len(a))[:m], rng.Perm(len(b))[:m]
		sa, sb := make(Features, m), make(Features, m)
		for i := range m {
			sa[i], sb[i] = a[x[i]], b[y[i]]
		}
		mmds[s] = mmd2(sa, sb)
	}
	mean, std := meanStd(mmds)
	return KIDResult{KID: mean, Std: std, Subsets: subsets, SubsetSize: m}, nil
}

// mmd2 is the unbiased squared MMD of two sets of m rows each under the
// polynomial kernel (x.y/d + 1)^3: the kernel's mean over distinct pairs
// within each set, less twice its mean over all pairs across them.
func mmd2(a, b Features) float64 {
	m, d := len(a), float64(len(a[0]))
	k := func(x, y []float64) float64 {
		var s float64
		for i := range x {
			s += x[i] * y[i]
		}
		return math.Pow(s/d+1, 3)
	}
	var xx, yy, xy float64
	for i := range m {
		for j := range m {
			if i != j {
				xx += k(a[i], a[j])
				yy += k(b[i], b[j])
			}
			xy += k(a[i], b[j])
		}
	}
	fm := float64(m)
	return (xx+yy)/(fm*(fm-1)) - 2*xy/(fm*fm)
}

// FID is the Frechet distance of the Gaussians fitted to two sets of
// features (Heusel et al., 2017):
// |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^(1/2)).
// With n rows centred as A (n x d), S_a = A'A/(n-1); the eigenvalues of
// S_a S_b are the squared singular values of B A'/sqrt((n_a-1)(n_b-1)), so
// the trace of the root is the sum of those singular values: an SVD of an
// n_b x n_a matrix rather than roots of d x d ones.
func FID(a, b Features) (float64, error) {
	if err := sameWidth(a, b); err != nil {
		return 0, err
	}
	if len(a) < 2 || len(b) < 2 {
		return 0, errors.New("FID needs at least 2 rows a set")
	}
	ma, ca := centred(a)
	mb, cb := centred(b)
	var dist float64
	for i := range ma {
		dist += (ma[i] - mb[i]) * (ma[i] - mb[i])
	}
	na, nb := float64(len(a)-1), float64(len(b)-1)
	trA := mat.Norm(ca, 2) // Frobenius norm for a matrix
	trB := mat.Norm(cb, 2)
	var p mat.Dense
	p.Mul(cb, ca.T())
	var svd mat.SVD
	if !svd.Factorize(&p, mat.SVDNone) {
		return 0, errors.New("FID: the SVD did not converge")
	}
	var root float64
	for _, v := range svd.Values(nil) {
		root += v
	}
	return dist + trA*trA/na + trB*trB/nb - 2*root/math.Sqrt(na*nb), nil
}

// centred is the mean row of f, and f with it subtracted, as a matrix.
func centred(f Features) ([]float64, *mat.Dense) {
	d := len(f[0])
	mean := make([]float64, d)
	for _, row := range f {
		for j, v := range row {
			mean[j] += v
		}
	}
	for j := range mean {
		mean[j] /= float64(len(f))
	}
	c := mat.NewDense(len(f), d, nil)
	for i, row := range f {
		for j, v := range row {
			c.Set(i, j, v-mean[j])
		}
	}
	return mean, c
}

func sameWidth(a, b Features) error {
	if len(a) == 0 || len(b) == 0 {
		return errors.New("no features")
	}
	d := len(a[0])
	for _, set := range []Features{a, b} {
		for _, row := range set {
			if len(row) != d || d == 0 {
				return fmt.Errorf("features of %d and %d values: all must have one length", len(row), d)
			}
		}
	}
	return nil
}

func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)))
}
