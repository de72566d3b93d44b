package train

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// speedWindow is how long the images-per-second figure averages over.
const speedWindow = 10 * time.Second

// loop runs stages until done or a budget is reached.
func (t *trainer) loop(ctx context.Context) (StopReason, error) {
	for t.st.Stage != StageDone {
		reason, err := t.runStage(ctx)
		if err != nil || reason != stopNone {
			return reason, err
		}
		// The stage reached its step budget.
		if t.st.Stage == StageAutoencoder {
			if err := t.beginDenoiserStage(ctx); err != nil {
				return stopNone, err
			}
			continue
		}
		return t.finishStage(ctx, StopMaxSteps)
	}
	return StopDone, nil
}

// runStage trains the current stage epoch by epoch. It returns stopNone
// when the stage reached its step budget, else why the run stopped.
func (t *trainer) runStage(ctx context.Context) (StopReason, error) {
	total := t.stageSteps()
	t.window, t.windowImages, t.micro = time.Now(), 0, 0
	for {
		if t.cfg.MaxEpochs > 0 && t.st.Stage == StageDenoiser && t.st.Epoch >= t.cfg.MaxEpochs {
			return t.finishStage(ctx, StopMaxEpochs)
		}
		stageDone, reason, err := t.runEpoch(ctx, total)
		if err != nil || reason != stopNone {
			return reason, err
		}
		if ctx.Err() != nil {
			if err := t.saveCheckpoint(); err != nil {
				return stopNone, err
			}
			return StopCancelled, nil
		}
		if stageDone {
			return stopNone, nil
		}
		t.st.Epoch++
		t.st.Batch = 0
	}
}

// runEpoch trains on the rest of the current epoch. It reports whether the
// stage reached its step budget, or why the run stopped.
func (t *trainer) runEpoch(ctx context.Context, total int) (stageDone bool, reason StopReason, err error) {
	ectx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the loader's epoch however this returns
	for r := range t.train.Epoch(ectx, t.st.Epoch, t.st.Batch) {
		if r.Err != nil {
			return false, stopNone, r.Err
		}
		if err := t.microStep(r.Batch, total); err != nil {
			return false, stopNone, err
		}
		if math.IsNaN(t.lastLoss) || math.IsInf(t.lastLoss, 0) {
			return false, stopNone, fmt.Errorf("train: loss is %v at %s step %d", t.lastLoss, t.st.Stage, t.st.Step)
		}
		n := len(r.Batch.Items)
		t.st.Images += int64(n)
		t.windowImages += n
		t.st.Batch = r.Batch.Index + 1
		t.micro++
		if t.micro < t.cfg.GradAccum {
			continue
		}
		t.micro = 0 // the optimizer stepped in microStep, inside the compute lane
		if stageDone, reason, err = t.afterStep(ctx, total); err != nil || stageDone || reason != stopNone {
			return stageDone, reason, err
		}
	}
	return false, stopNone, nil
}

// microStep computes one batch's loss and gradients inside the compute lane,
// and steps the optimizer (and the average) on the last batch of a gradient
// accumulation. Every tensor it makes is freed on every path.
func (t *trainer) microStep(b datasets.Batch, total int) error {
	unlock := torchrt.LockCompute()
	defer unlock()
	x := toTensor(b, t.m.Config.ImageSize, t.m.Device())
	defer x.MustDrop()
	loss, err := t.loss(x, t.noise)
	if err != nil {
		return err
	}
	defer loss.MustDrop()
	scaled := loss.MustDivScalar(ts.FloatScalar(float64(t.cfg.GradAccum)), false)
	defer scaled.MustDrop()
	if err := t.m.Backward(scaled); err != nil {
		return fmt.Errorf("backward: %w", err)
	}
	t.lastLoss = torchrt.Float64s(loss)[0]
	if t.micro+1 >= t.cfg.GradAccum {
		t.opt.Config.LR = t.baseLR() * t.cfg.LRSchedule.Factor(t.st.Step, total)
		t.opt.Update()
		t.opt.ZeroGrad()
		if t.ema != nil {
			t.ema.update()
			t.st.EMAUpdates = t.ema.Updates
		}
	}
	return nil
}

// afterStep follows an optimizer step: progress event and log, validation
// and checkpoint when due, and the budgets. It reports whether the stage
// reached its step budget, or why the run stopped.
func (t *trainer) afterStep(ctx context.Context, total int) (stageDone bool, reason StopReason, err error) {
	t.st.Step++
	ips := float64(t.windowImages) / math.Max(time.Since(t.window).Seconds(), 1e-9)
	ev := Event{Kind: shared.EventStep, Step: t.st.Step, TotalSteps: total, Epoch: t.st.Epoch, Loss: t.lastLoss, ImagesPerSec: ips}
	if total > 0 && ips > 0 {
		ev.ETASeconds = float64(total-t.st.Step) * float64(t.cfg.BatchSize*t.cfg.GradAccum) / ips
	}
	t.emit(ev)
	t.log.Info("step", "stage", t.st.Stage, "step", t.st.Step, "epoch", t.st.Epoch, "loss", t.lastLoss, "images_per_sec", ips)
	if time.Since(t.window) > speedWindow {
		t.window, t.windowImages = time.Now(), 0
	}
	if t.cfg.ValEvery > 0 && t.st.Step%t.cfg.ValEvery == 0 {
		if err := t.validate(); err != nil {
			return false, stopNone, err
		}
	}
	if t.cfg.CheckpointEvery > 0 && t.st.Step%t.cfg.CheckpointEvery == 0 {
		if err := t.saveCheckpoint(); err != nil {
			return false, stopNone, err
		}
	}
	if total > 0 && t.st.Step >= total {
		return true, stopNone, nil
	}
	reason = t.overBudget(ctx)
	switch {
	case reason == stopNone:
		return false, stopNone, nil
	case reason == StopMaxDuration && t.st.Stage == StageDenoiser:
		// A time budget that ends the denoiser stage ends the run as its
		// step budget would: validated, averaged, calibrated and saved as a
		// model.
		reason, err = t.finishStage(ctx, reason)
		return false, reason, err
	}
	// A cancellation (or a budget spent before the denoiser trained at
	// all) leaves a checkpoint to resume.
	if err := t.saveCheckpoint(); err != nil {
		return false, stopNone, err
	}
	return false, reason, nil
}

// beginDenoiserStage follows the autoencoder stage: validate it, scale the
// latents, and start the denoiser stage from a checkpoint.
func (t *trainer) beginDenoiserStage(ctx context.Context) error {
	if err := t.validate(); err != nil {
		return err
	}
	if t.cfg.ScaleLatents {
		if err := t.scaleLatents(ctx); err != nil {
			return err
		}
	}
	t.st = state{Stage: StageDenoiser, Noise: nil, BestVal: Float(math.Inf(1)), Images: t.st.Images}
	if err := t.beginStage(false); err != nil {
		return err
	}
	return t.saveCheckpoint()
}

// overBudget says whether the run must stop now, and why.
func (t *trainer) overBudget(ctx context.Context) StopReason {
	if ctx.Err() != nil {
		return StopCancelled
	}
	if t.cfg.MaxDuration > 0 && time.Since(t.start) >= t.cfg.MaxDuration {
		return StopMaxDuration
	}
	return stopNone
}

// finishStage ends the denoiser stage: validate, write the final model.
func (t *trainer) finishStage(ctx context.Context, reason StopReason) (StopReason, error) {
	if err := t.validate(); err != nil {
		return stopNone, err
	}
	if t.ema != nil {
		// The saved model is the average; the checkpoint's live weights
		// are then the average too, which is all a finished run needs.
		t.ema.swap()
	}
	if err := t.buildPatchMemory(ctx, t.trainSamples); err != nil {
		return stopNone, err
	}
	if err := t.calibrate(ctx); err != nil {
		return stopNone, err
	}
	if err := t.trainHead(ctx, t.trainSamples); err != nil {
		return stopNone, err
	}
	t.st.Stage = StageDone
	meta := map[string]string{"diad.train_steps": fmt.Sprint(t.st.Step)}
	if err := t.m.Save(filepath.Join(t.cfg.OutDir, ModelFile), meta); err != nil {
		return stopNone, err
	}
	if t.ema != nil {
		// The last step's weights too, with the same calibration, so that
		// what the average adds can be measured (backend/model/demo/README.md).
		t.ema.swap()
		err := t.m.Save(filepath.Join(t.cfg.OutDir, NoEMAFile), meta)
		t.ema.swap()
		t.ema.free()
		t.ema = nil
		if err != nil {
			return stopNone, err
		}
	}
	if err := t.saveCheckpoint(); err != nil {
		return stopNone, err
	}
	t.emit(Event{Kind: shared.EventDone, Step: t.st.Step, Loss: t.lastLoss, ValLoss: t.lastVal, Message: string(reason)})
	return reason, nil
}

// validate computes the stage loss on the held-out images with fixed noise.
func (t *trainer) validate() error {
	if t.val == nil {
		return nil
	}
	if t.ema != nil {
		t.ema.swap()
		defer t.ema.swap()
	}
	noise := diffusion.NewNoise(t.cfg.Seed ^ 0x5eed)
	sum, n := 0.0, 0
	var err error
	torchrt.NoGrad(func() {
		for r := range t.val.Epoch(context.Background(), 0, 0) {
			if r.Err != nil {
				err = r.Err
				return
			}
			unlock := torchrt.LockCompute()
			x := toTensor(r.Batch, t.m.Config.ImageSize, t.m.Device())
			l, lerr := t.loss(x, noise)
			x.MustDrop()
			unlock()
			if lerr != nil {
				err = lerr
				return
			}
			sum += torchrt.Float64s(l)[0] * float64(len(r.Batch.Items))
			n += len(r.Batch.Items)
			l.MustDrop()
		}
	})
	if err != nil {
		return err
	}
	t.lastVal = sum / float64(n)
	t.emit(Event{Kind: shared.EventValidation, Step: t.st.Step, Epoch: t.st.Epoch, ValLoss: t.lastVal})
	t.log.Info("validation", "stage", t.st.Stage, "step", t.st.Step, "val_loss", t.lastVal)
	if t.st.Stage == StageDenoiser && t.lastVal < float64(t.st.BestVal) {
		t.st.BestVal = Float(t.lastVal)
		return t.m.Save(filepath.Join(t.cfg.OutDir, BestFile), map[string]string{"diad.val_loss": fmt.Sprint(t.lastVal), "diad.train_steps": fmt.Sprint(t.st.Step)})
	}
	return nil
}
