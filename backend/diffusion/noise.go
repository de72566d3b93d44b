package diffusion

import (
	"fmt"
	"math/rand/v2"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// Noise draws every random number of training and sampling (timesteps,
// Gaussian noise, posterior samples) from one Go PCG generator. Its state is a
// few bytes that checkpoints save, so an interrupted run resumes on exactly the
// same sequence, on any device.
type Noise struct {
	pcg *rand.PCG
	rng *rand.Rand
	// more are the generators of a batch's further images (NewBatchNoise).
	more []*Noise
}

// NewNoise seeds a generator.
func NewNoise(seed uint64) *Noise {
	pcg := rand.NewPCG(seed, 0x9e3779b97f4a7c15)
	return &Noise{pcg: pcg, rng: rand.New(pcg)}
}

// NewBatchNoise gives each image of a batch its own generator: Normal draws
// image i's share of a [B, ...] tensor from seeds[i] alone, so that an image
// gets the same noise in any batch - a run's image replays exactly on its own
// in the explorer. Timesteps and Uint64 draw from the first generator; its
// state (MarshalBinary) is the first generator's.
func NewBatchNoise(seeds []uint64) *Noise {
	if len(seeds) == 0 {
		return NewNoise(0)
	}
	n := NewNoise(seeds[0])
	for _, s := range seeds[1:] {
		n.more = append(n.more, NewNoise(s))
	}
	return n
}

// Normal returns a standard normal float tensor of the given shape on dev.
// With per-image generators the first dimension must be the batch.
func (n *Noise) Normal(shape []int64, dev gotch.Device) *ts.Tensor {
	count := int64(1)
	for _, d := range shape {
		count *= d
	}
	v := make([]float32, count)
	if len(n.more) == 0 {
		for i := range v {
			v[i] = float32(n.rng.NormFloat64())
		}
	} else {
		gens := append([]*Noise{n}, n.more...)
		if len(shape) == 0 || shape[0] != int64(len(gens)) {
			panic(fmt.Sprintf("diffusion: noise for shape %v from %d per-image generators", shape, len(gens)))
		}
		per := int(count) / len(gens)
		for g, gen := range gens {
			for i := g * per; i < (g+1)*per; i++ {
				v[i] = float32(gen.rng.NormFloat64())
			}
		}
	}
	t := ts.MustOfSlice(v).MustView(shape, true)
	if dev != gotch.CPU {
		t = t.MustTo(dev, true)
	}
	return t
}

// Timesteps draws b timesteps uniformly from [0, T).
func (n *Noise) Timesteps(b, T int) []int {
	t := make([]int, b)
	for i := range t {
		t[i] = n.rng.IntN(T)
	}
	return t
}

// Uint64 draws a raw value (e.g. to seed a shuffle).
func (n *Noise) Uint64() uint64 { return n.rng.Uint64() }

// MarshalBinary saves the generator state.
func (n *Noise) MarshalBinary() ([]byte, error) { return n.pcg.MarshalBinary() }

// UnmarshalBinary restores a saved state.
func (n *Noise) UnmarshalBinary(b []byte) error { return n.pcg.UnmarshalBinary(b) }
