package torchref

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

// Case is one computation run on both sides: diad's call and the worker's
// request, on the same weights and inputs.
type Case struct {
	Name  string
	Batch int
	// Diad runs diad's side once and returns its outputs, named as the
	// worker names them; Compare frees them.
	Diad    func() (map[string]*ts.Tensor, error)
	Request Request
}

// Sample is one timed call.
type Sample struct {
	Seconds float64
	// ExtraMiB is the peak resident memory during the call above the
	// resident memory before it: what the call itself needed.
	ExtraMiB float64
}

// Result is a case measured over rounds, the sides alternating (diad,
// PyTorch, diad, PyTorch, ...) after one warm-up call each.
type Result struct {
	Name        string
	Batch       int
	Diad, Torch []Sample
	// RelDiff is the largest difference between the two sides' outputs,
	// over all outputs and calls, relative to the largest PyTorch value of
	// that output: max|diad - torch| / max|torch|.
	RelDiff float64
}

// Ratio is diad's median time over PyTorch's.
func (r Result) Ratio() float64 { return Median(Seconds(r.Diad)) / Median(Seconds(r.Torch)) }

// Seconds are the samples' times.
func Seconds(s []Sample) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = x.Seconds
	}
	return out
}

// ExtraMiB are the samples' memory figures.
func ExtraMiB(s []Sample) []float64 {
	out := make([]float64, len(s))
	for i, x := range s {
		out[i] = x.ExtraMiB
	}
	return out
}

// Spread returns the median, the minimum and the maximum of v (not
// empty): how the benchmarks report repeated timings.
func Spread(v []float64) (med, lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// Median of v (not empty); the spread's ends are not needed here.
func Median(v []float64) float64 {
	med, _, _ := Spread(v)
	return med
}

// Compare runs c: a warm-up call on each side, then rounds of one call on
// each side, diad first; every call's outputs are compared. dir receives
// the worker's outputs.
func Compare(w *Worker, c Case, rounds int, dir string) (Result, error) {
	res := Result{Name: c.Name, Batch: c.Batch}
	req := c.Request
	req.Output = filepath.Join(dir, fmt.Sprintf("torch-%s-b%d.safetensors", c.Name, c.Batch))
	defer os.Remove(req.Output)
	for round := -1; round < rounds; round++ {
		ours, s, err := timeDiad(c.Diad)
		if err != nil {
			return res, fmt.Errorf("%s batch %d in diad: %w", c.Name, c.Batch, err)
		}
		rep, err := w.Run(req)
		if err != nil {
			freeAll(ours)
			return res, fmt.Errorf("%s batch %d: %w", c.Name, c.Batch, err)
		}
		d, err := relDiff(ours, req.Output)
		freeAll(ours)
		if err != nil {
			return res, fmt.Errorf("%s batch %d: %w", c.Name, c.Batch, err)
		}
		res.RelDiff = math.Max(res.RelDiff, d)
		if round >= 0 {
			res.Diad = append(res.Diad, s)
			res.Torch = append(res.Torch, Sample{Seconds: rep.Seconds, ExtraMiB: rep.PeakRSSMiB - rep.RSSBeforeMiB})
		}
	}
	return res, nil
}

func timeDiad(run func() (map[string]*ts.Tensor, error)) (map[string]*ts.Tensor, Sample, error) {
	if err := torchrt.ResetPeakRSS(); err != nil {
		return nil, Sample{}, err
	}
	before := torchrt.RSSMiB()
	start := time.Now()
	out, err := run()
	s := Sample{Seconds: time.Since(start).Seconds(), ExtraMiB: torchrt.PeakRSSMiB() - before}
	return out, s, err
}

func freeAll(m map[string]*ts.Tensor) {
	for _, t := range m {
		t.MustDrop()
	}
}

// relDiff compares diad's outputs with the worker's file, output by output.
func relDiff(ours map[string]*ts.Tensor, path string) (float64, error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read PyTorch's outputs: %w", err)
	}
	defer r.Close()
	if len(r.Entries()) != len(ours) {
		return 0, fmt.Errorf("PyTorch gave %d outputs, diad %d", len(r.Entries()), len(ours))
	}
	worst := 0.0
	for name, a := range ours {
		b, err := r.Load(name, gotch.CPU)
		if err != nil {
			return 0, fmt.Errorf("PyTorch's output %s: %w", name, err)
		}
		var d float64
		err = torchrt.Do(func() error {
			ac := a.MustTo(gotch.CPU, false)
			defer ac.MustDrop()
			if fmt.Sprint(ac.MustSize()) != fmt.Sprint(b.MustSize()) {
				return fmt.Errorf("output %s: diad %v, PyTorch %v", name, ac.MustSize(), b.MustSize())
			}
			diff := ac.MustSub(b, false).MustAbs(true).MustMax(true)
			scale := b.MustAbs(false).MustMax(true)
			d = diff.Float64Values()[0] / math.Max(scale.Float64Values()[0], 1e-30)
			diff.MustDrop()
			scale.MustDrop()
			return nil
		})
		b.MustDrop()
		if err != nil {
			return 0, err
		}
		if math.IsNaN(d) {
			return 0, fmt.Errorf("output %s: NaN", name)
		}
		worst = math.Max(worst, d)
	}
	return worst, nil
}

// inputs are the tensors of one case, saved for the worker.
type inputs map[string]*ts.Tensor

func (in inputs) save(dir, name string) (string, error) {
	path := filepath.Join(dir, "inputs-"+name+".safetensors")
	if err := checkpoint.Save(path, in, nil); err != nil {
		return "", err
	}
	return path, nil
}

func (in inputs) free() {
	for _, t := range in {
		t.MustDrop()
	}
}

func timestepTensor(t []int) *ts.Tensor {
	v := make([]float32, len(t))
	for i, x := range t {
		v[i] = float32(x)
	}
	return ts.MustOfSlice(v)
}

// Ops are the cases InferenceCases makes, in order.
var Ops = []string{OpDenoise, OpEncode, OpDecode, OpReconstruct}

// InferenceCases are m's inference computations at batch b with random
// inputs drawn from seed, their inputs saved in dir: the guided denoiser
// pass (SG network + UNet at the sampler's noise level), the autoencoder's
// encode (a posterior sample) and decode, and the reference
// reconstruction (encode, noise to t = 999, 10 DDIM steps, decode). The
// returned function frees the inputs.
func InferenceCases(ctx context.Context, m *model.DiAD, ops []string, b int, dir string, seed uint64) (cases []Case, free func(), err error) {
	cfg := m.Config
	n := diffusion.NewNoise(seed)
	s, dev := int64(cfg.ImageSize), m.Device()
	latent := m.AE.LatentShape(int64(b), s)
	sampler := diffusion.ReferenceSampler
	steps, err := sampler.StepTimesteps(m.Schedule.T())
	if err != nil {
		return nil, nil, err
	}
	t := make([]int, b)
	for i := range t {
		t[i] = sampler.NoiseLevel()
	}
	in := inputs{
		"image": n.Normal([]int64{int64(b), 3, s, s}, gotch.CPU),
		"z":     n.Normal(latent, gotch.CPU),
		"post":  n.Normal(latent, gotch.CPU),
		"t":     timestepTensor(t),
	}
	// Reconstruct draws the posterior sample and then the forward noise
	// from its generator: the worker gets the same two draws.
	reconSeed := n.Uint64()
	rn := diffusion.NewNoise(reconSeed)
	in["recon_post"] = rn.Normal(latent, gotch.CPU)
	in["recon_noise"] = rn.Normal(latent, gotch.CPU)
	// On the model's device for diad's side.
	onDev := func(name string) *ts.Tensor { return in[name].MustTo(dev, false) }
	image, z, post := onDev("image"), onDev("z"), onDev("post")
	free = func() {
		in.free()
		image.MustDrop()
		z.MustDrop()
		post.MustDrop()
	}
	defer func() {
		if err != nil {
			free()
		}
	}()
	// file saves the worker's inputs of op: its names for ours.
	file := func(op string, names map[string]string) (string, error) {
		sub := inputs{}
		for to, from := range names {
			sub[to] = in[from]
		}
		return sub.save(dir, fmt.Sprintf("%s-%s-b%d", cfg.Preset, op, b))
	}
	dc := diadCalls{ctx: ctx, m: m, image: image, z: z, post: post, t: t, sampler: sampler, reconSeed: reconSeed, steps: steps}
	for _, op := range ops {
		c, names, err := dc.call(op)
		if err != nil {
			return nil, nil, err
		}
		path, err := file(op, names)
		if err != nil {
			return nil, nil, err
		}
		c.Name, c.Batch = op, b
		c.Request.Op, c.Request.Inputs = op, path
		cases = append(cases, c)
	}
	return cases, free, nil
}

// diadCalls are diad's sides of the inference cases, on the inputs
// InferenceCases made.
type diadCalls struct {
	ctx            context.Context
	m              *model.DiAD
	image, z, post *ts.Tensor
	t              []int
	sampler        diffusion.SamplerConfig
	reconSeed      uint64
	steps          []int
}

// call is op's case without its inputs' file: diad's call, and the worker's
// input names for the inputs' names.
func (d diadCalls) call(op string) (c Case, names map[string]string, err error) {
	switch op {
	case OpDenoise:
		names = map[string]string{"z": "z", "t": "t", "image": "image"}
		c.Diad = func() (map[string]*ts.Tensor, error) {
			var eps *ts.Tensor
			err := torchrt.Do(func() error {
				torchrt.NoGrad(func() { eps = d.m.PredictEps(d.z, d.t, d.image) })
				return nil
			})
			return map[string]*ts.Tensor{"eps": eps}, err
		}
	case OpEncode:
		names = map[string]string{"image": "image", "post": "post"}
		c.Diad = func() (map[string]*ts.Tensor, error) {
			var l *ts.Tensor
			err := torchrt.Do(func() error {
				torchrt.NoGrad(func() { l = d.m.AE.EncodeLatent(d.image, d.post) })
				return nil
			})
			return map[string]*ts.Tensor{"latent": l}, err
		}
	case OpDecode:
		names = map[string]string{"latent": "z"}
		c.Diad = func() (map[string]*ts.Tensor, error) {
			var img *ts.Tensor
			err := torchrt.Do(func() error {
				torchrt.NoGrad(func() { img = d.m.AE.Decode(d.z) })
				return nil
			})
			return map[string]*ts.Tensor{"image": img}, err
		}
	case OpReconstruct:
		names = map[string]string{"image": "image", "post": "recon_post", "noise": "recon_noise"}
		c.Request.Start, c.Request.Timesteps = d.sampler.NoiseLevel(), d.steps
		c.Diad = func() (map[string]*ts.Tensor, error) {
			rec, err := d.m.Reconstruct(d.ctx, d.image, d.sampler, diffusion.NewNoise(d.reconSeed), nil)
			if err != nil {
				return nil, err
			}
			return map[string]*ts.Tensor{"image": rec.Image, "latent": rec.Latent}, nil
		}
	default:
		return c, nil, fmt.Errorf("torchref: unknown op %q (want one of %v)", op, Ops)
	}
	return c, names, nil
}

// TrainCase is one optimizer step of m (forward, backward, AdamW with adam)
// on a random batch of b images, with m's present freezing on diad's side
// and the reference's on the worker's (set the reference freezing on m).
// Every call draws the same posterior sample, timesteps and noise from
// seed, so both sides take the same steps. Its output is the loss.
func TrainCase(m *model.DiAD, b int, dir string, seed uint64, adam optim.AdamWConfig) (c Case, free func(), err error) {
	cfg := m.Config
	s := int64(cfg.ImageSize)
	image := diffusion.NewNoise(seed^0x5eed).Normal([]int64{int64(b), 3, s, s}, gotch.CPU)
	// TrainLoss draws, in this order: the posterior sample, the timesteps,
	// the noise.
	n := diffusion.NewNoise(seed)
	latent := m.AE.LatentShape(int64(b), s)
	in := inputs{"image": image, "post": n.Normal(latent, gotch.CPU)}
	in["t"] = timestepTensor(n.Timesteps(b, m.Schedule.T()))
	in["eps"] = n.Normal(latent, gotch.CPU)
	path, err := in.save(dir, fmt.Sprintf("%s-train-b%d", cfg.Preset, b))
	if err != nil {
		in.free()
		return Case{}, nil, err
	}
	x := image.MustTo(m.Device(), false)
	opt, err := optim.NewAdamW(m.Store.Trainable(), adam)
	if err != nil {
		in.free()
		x.MustDrop()
		return Case{}, nil, err
	}
	c = Case{Name: OpTrain, Batch: b, Request: Request{Op: OpTrain, Inputs: path, AdamW: &AdamW{
		LR: adam.LR, Beta1: adam.Beta1, Beta2: adam.Beta2, Eps: adam.Eps, WeightDecay: adam.WeightDecay}}}
	c.Diad = func() (map[string]*ts.Tensor, error) {
		var out *ts.Tensor
		err := torchrt.Do(func() error {
			opt.ZeroGrad()
			loss, err := m.TrainLoss(x, diffusion.NewNoise(seed))
			if err != nil {
				return err
			}
			if err := m.Backward(loss); err != nil {
				loss.MustDrop()
				return err
			}
			opt.Update()
			out = loss.MustDetach(true).MustReshape([]int64{1}, true)
			return nil
		})
		return map[string]*ts.Tensor{"loss": out}, err
	}
	return c, func() { in.free(); x.MustDrop(); opt.Free() }, nil
}

// FillZeroInit gives every parameter that is all zeros - the zero
// convolutions, output heads and attention projections the model starts
// with - random values of the fan-in scale of the other layers, and the
// cross-attention context a random one, so that every part of the network
// contributes to the outputs being compared, as in a trained model.
func FillZeroInit(m *model.DiAD) error {
	return torchrt.Do(func() error {
		torchrt.NoGrad(func() {
			for _, p := range m.Store.Params() {
				if p.Buffer {
					if p.Name == model.ContextName {
						torchrt.Uniform_(p.Tensor, -1, 1)
					}
					continue
				}
				mx := p.Tensor.MustAbs(false).MustMax(true)
				zero := mx.Float64Values()[0] == 0
				mx.MustDrop()
				if !zero {
					continue
				}
				size := p.Tensor.MustSize()
				fanIn := size[0]
				if len(size) > 1 {
					fanIn = 1
					for _, d := range size[1:] {
						fanIn *= d
					}
				}
				bound := 1 / math.Sqrt(float64(fanIn))
				torchrt.Uniform_(p.Tensor, -bound, bound)
			}
		})
		return nil
	})
}
