package pipeline

// Order is the stream's order: position p of the concatenated epochs is
// item Perm(p/n)(p%n) of n, where each epoch's permutation is a keyed
// bijection (a Feistel network, walked until it lands in [0, n)). It
// holds no table: the same for a hundred images or a billion.
type Order struct {
	n    uint64
	seed uint64
	half uint // bits in each Feistel half; the domain is 4^half >= n
}

// NewOrder is the order of n items under seed.
func NewOrder(n int, seed uint64) Order {
	half := uint(1)
	for uint64(1)<<(2*half) < uint64(n) {
		half++
	}
	return Order{n: uint64(n), seed: seed, half: half}
}

// At is the item at stream position p, and its epoch.
func (o Order) At(p int64) (item int, epoch int64) {
	epoch = p / int64(o.n)
	x := uint64(p % int64(o.n))
	key := mix(o.seed ^ mix(uint64(epoch)+0x9e3779b97f4a7c15))
	// The domain is less than 4n, so a walk takes under 4 steps on
	// average; it ends because a permutation's cycle through x returns
	// to [0, n).
	for {
		x = o.feistel(x, key)
		if x < o.n {
			return int(x), epoch
		}
	}
}

func (o Order) feistel(x, key uint64) uint64 {
	mask := uint64(1)<<o.half - 1
	l, r := x>>o.half, x&mask
	for round := range uint64(4) {
		l, r = r, l^(mix(r^key^round<<56)&mask)
	}
	return l<<o.half | r
}

// mix is SplitMix64's finaliser: every input bit moves every output bit.
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
