package model

import (
	"context"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

// benchBatch is the batch size of the engine benchmarks.
const benchBatch = 4

func benchModel(b *testing.B, preset string) *DiAD {
	cfg, err := Preset(preset)
	if err != nil {
		b.Fatal(err)
	}
	torchrt.ManualSeed(1)
	m, err := New(cfg, gotch.CPU)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(m.Free)
	randomise(m, "") // trained-like weights: no zero layers short-cutting work
	return m
}

// BenchmarkTrainStep: one optimizer step (forward, backward, AdamW) on a batch.
func BenchmarkTrainStep(b *testing.B) {
	for _, preset := range []string{"tiny", "small"} {
		b.Run(preset, func(b *testing.B) {
			defer torchrt.Pin()()
			m := benchModel(b, preset)
			opt, err := optim.NewAdamW(m.Store.Trainable(), optim.ReferenceAdamW)
			if err != nil {
				b.Fatal(err)
			}
			defer opt.Free()
			images, zt := tinyInputs(m, benchBatch, 1)
			zt.MustDrop()
			defer images.MustDrop()
			noise := diffusion.NewNoise(1)
			torchtest.ResetPeakRSS(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				opt.ZeroGrad()
				loss, err := m.TrainLoss(images, noise)
				if err != nil {
					b.Fatal(err)
				}
				loss.MustBackward()
				loss.MustDrop()
				opt.Update()
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "images/s")
			b.ReportMetric(torchtest.PeakRSSMiB(), "peakRSS-MiB")
		})
	}
}

// BenchmarkReconstruct: the full reference inference (encode, noise to 999,
// 10 DDIM steps with SG guidance, decode) on a batch.
func BenchmarkReconstruct(b *testing.B) {
	for _, preset := range []string{"tiny", "small"} {
		b.Run(preset, func(b *testing.B) {
			defer torchrt.Pin()()
			m := benchModel(b, preset)
			images, zt := tinyInputs(m, benchBatch, 1)
			zt.MustDrop()
			defer images.MustDrop()
			torchtest.ResetPeakRSS(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				rec, err := m.Reconstruct(context.Background(), images, m.Config.Sampler, diffusion.NewNoise(uint64(i)), nil)
				if err != nil {
					b.Fatal(err)
				}
				rec.Free()
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "images/s")
			b.ReportMetric(torchtest.PeakRSSMiB(), "peakRSS-MiB")
		})
	}
}

// BenchmarkPredictEps: one guided denoiser pass (SG network + UNet) at
// batch 1, the explorer's per-step cost; at these sizes the per-operation
// overhead of the Go side shows (`diad-dev bench torch` puts it beside PyTorch).
func BenchmarkPredictEps(b *testing.B) {
	for _, preset := range []string{"tiny", "demo"} {
		b.Run(preset, func(b *testing.B) {
			defer torchrt.Pin()()
			m := benchModel(b, preset)
			images, zt := tinyInputs(m, 1, 1)
			defer images.MustDrop()
			defer zt.MustDrop()
			t := []int{m.Schedule.T() - 1}
			made := ts.TensorCount
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				torchrt.NoGrad(func() { m.PredictEps(zt, t, images).MustDrop() })
			}
			b.StopTimer()
			// Tensors made per pass: each is one operation crossing cgo.
			b.ReportMetric(float64(ts.TensorCount-made)/float64(b.N), "tensors/op")
		})
	}
}
