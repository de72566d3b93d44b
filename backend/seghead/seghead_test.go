package seghead

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

var tinyHead = Config{Channels: []int64{8, 8, 16}, NormGroups: 4}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Channels: []int64{8, 12}, NormGroups: 8},
		{Channels: []int64{8}, NormGroups: 0},
		{Channels: []int64{0}, NormGroups: 1},
	} {
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("no head: %v", err)
	}
	if err := DemoConfig.Validate(); err != nil {
		t.Errorf("demo: %v", err)
	}
	if got := DemoConfig.Multiple(); got != 8 {
		t.Errorf("demo multiple %d, want 8", got)
	}
	bad := DemoTraining
	bad.Crop = 60
	if bad.Validate(DemoConfig, 128) == nil {
		t.Error("crop 60 with 4 levels: no error")
	}
	bad = DemoTraining
	bad.DefectShare = 1.5
	if bad.Validate(DemoConfig, 128) == nil {
		t.Error("defect share 1.5: no error")
	}
}

// A painted defect changes the crop exactly where the mask says something
// visible changed, and nowhere outside the painted region.
func TestPaintMasksWhatChanged(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const n = 64
	nonEmpty := 0
	for trial := 0; trial < 200; trial++ {
		c := Crop{Side: n, Pix: make([]float32, 3*n*n)}
		d := Crop{Side: n, Pix: make([]float32, 3*n*n)}
		for i := range c.Pix {
			c.Pix[i] = 0.3 + 0.2*float32(math.Sin(float64(i)*0.37))
			d.Pix[i] = r.Float32()
		}
		orig := append([]float32(nil), c.Pix...)
		mask := Paint(c, d, r)
		if len(mask) != n*n {
			t.Fatalf("mask has %d values", len(mask))
		}
		marked := 0
		for p, m := range mask {
			diff := float32(0)
			for k := 0; k < 3; k++ {
				diff += abs32(c.Pix[k*n*n+p] - orig[k*n*n+p])
			}
			if m == 1 {
				marked++
				if diff/3 < minChange {
					t.Fatalf("trial %d: pixel %d marked but changed by %v", trial, p, diff/3)
				}
			}
			for k := 0; k < 3; k++ {
				if v := c.Pix[k*n*n+p]; v < 0 || v > 1 {
					t.Fatalf("trial %d: value %v outside [0, 1]", trial, v)
				}
			}
		}
		if marked > 0 {
			nonEmpty++
		}
		if marked > n*n*3/4 {
			t.Fatalf("trial %d: %d of %d pixels marked: not a defect", trial, marked, n*n)
		}
	}
	// a few defects may be invisible (a smoothed flat region); most are not
	if nonEmpty < 150 {
		t.Errorf("only %d of 200 painted defects are visible", nonEmpty)
	}
}

func newTinyNet(t testing.TB) (*layers.Store, *Net) {
	t.Helper()
	torchrt.ManualSeed(3)
	store := layers.NewStore(gotch.CPU)
	var net *Net
	err := torchrt.Do(func() error {
		var err error
		net, err = New(store.Root().Sub("anomaly_head"), tinyHead)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Free)
	return store, net
}

func randomPairs(n, side int, r *rand.Rand) []Pair {
	var pairs []Pair
	for i := 0; i < n; i++ {
		img := make([]float32, 3*side*side)
		rec := make([]float32, 3*side*side)
		for k := range img {
			// a smooth normal texture, reconstructed almost exactly
			v := float32(math.Sin(float64(k%side)*0.5+float64(i)) * 0.8)
			img[k] = v + float32(r.NormFloat64()*0.05)
			rec[k] = v
		}
		pairs = append(pairs, Pair{Image: img, Recon: rec})
	}
	return pairs
}

// The head learns: after training, a painted defect scores higher inside its
// mask than the clean surface does, and the loss fell.
func TestTrainLearnsPaintedDefects(t *testing.T) {
	store, net := newTinyNet(t)
	const side = 32
	r := rand.New(rand.NewPCG(5, 6))
	pairs := randomPairs(6, side, r)
	cfg := TrainConfig{Steps: 120, BatchSize: 8, Crop: 32, DefectShare: 0.5,
		Optim: optim.AdamWConfig{LR: 3e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}}
	var losses []float64
	steps, err := Train(context.Background(), net, store.Trainable(), pairs, side, gotch.CPU, cfg, func(s Step) { losses = append(losses, s.Loss) })
	if err != nil {
		t.Fatal(err)
	}
	if steps != cfg.Steps || len(losses) != cfg.Steps {
		t.Fatalf("ran %d steps, reported %d, want %d", steps, len(losses), cfg.Steps)
	}
	first, last := mean64(losses[:10]), mean64(losses[len(losses)-10:])
	if !(last < 0.7*first) {
		t.Errorf("loss %0.3f -> %0.3f: did not learn", first, last)
	}
	// score a fresh painted defect
	imgs, recs, masks := drawBatch(pairs, side, TrainConfig{BatchSize: 16, Crop: side, DefectShare: 1}, rand.New(rand.NewPCG(9, 9)))
	var probs []float32
	err = torchrt.Do(func() error {
		torchrt.NoGrad(func() {
			x := torchrt.ImageBatch(imgs, 16, side, gotch.CPU)
			y := torchrt.ImageBatch(recs, 16, side, gotch.CPU)
			m := net.Map(x, y)
			probs = torchrt.Float32s(m)
			x.MustDrop()
			y.MustDrop()
			m.MustDrop()
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var in, out []float64
	for i, p := range probs {
		if masks[i] == 1 {
			in = append(in, float64(p))
		} else {
			out = append(out, float64(p))
		}
	}
	if len(in) == 0 {
		t.Fatal("no defective pixels drawn")
	}
	t.Logf("loss %.3f -> %.3f; probability inside defects %.3f, outside %.3f", first, last, mean64(in), mean64(out))
	if !(mean64(in) > mean64(out)+0.2) {
		t.Errorf("mean probability inside defects %.3f, outside %.3f: the head does not find them", mean64(in), mean64(out))
	}
}

func TestTrainRefusesBadInput(t *testing.T) {
	store, net := newTinyNet(t)
	cfg := TrainConfig{Steps: 1, BatchSize: 2, Crop: 16, Optim: optim.AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}}
	if _, err := Train(context.Background(), net, store.Trainable(), randomPairs(1, 16, rand.New(rand.NewPCG(1, 1))), 16, gotch.CPU, cfg, nil); err == nil {
		t.Error("one pair: no error")
	}
	pairs := randomPairs(2, 16, rand.New(rand.NewPCG(1, 1)))
	pairs[1].Recon = pairs[1].Recon[:10]
	if _, err := Train(context.Background(), net, store.Trainable(), pairs, 16, gotch.CPU, cfg, nil); err == nil {
		t.Error("short reconstruction: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Train(ctx, net, store.Trainable(), randomPairs(2, 16, rand.New(rand.NewPCG(1, 1))), 16, gotch.CPU, cfg, nil); err == nil {
		t.Error("cancelled context: no error")
	}
}

// Training steps and scoring leave no tensor behind.
func TestNoLeak(t *testing.T) {
	store, net := newTinyNet(t)
	pairs := randomPairs(3, 16, rand.New(rand.NewPCG(1, 1)))
	cfg := TrainConfig{Steps: 3, BatchSize: 2, Crop: 16, DefectShare: 0.5, Optim: optim.AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}}
	torchtest.RequireNoLeak(t, "Train", 0, func() {
		if _, err := Train(context.Background(), net, store.Trainable(), pairs, 16, gotch.CPU, cfg, nil); err != nil {
			t.Fatal(err)
		}
	})
	torchtest.RequireNoLeak(t, "Map and Loss", 0, func() {
		err := torchrt.Do(func() error {
			torchrt.NoGrad(func() {
				x := ts.MustRandn([]int64{2, 3, 16, 16}, gotch.Float, gotch.CPU)
				y := ts.MustRandn([]int64{2, 3, 16, 16}, gotch.Float, gotch.CPU)
				m := net.Logits(x, y)
				target := ts.MustZeros([]int64{2, 1, 16, 16}, gotch.Float, gotch.CPU)
				l := Loss(m, target)
				for _, v := range []*ts.Tensor{x, y, m, target, l} {
					v.MustDrop()
				}
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func mean64(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(max(len(v), 1))
}
