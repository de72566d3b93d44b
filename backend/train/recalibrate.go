package train

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// Recalibrate runs only the steps after the denoiser of cfg on a trained
// model - the calibration and, when cfg has head_training, the anomaly head
// (added if the model has none): it
// opens modelPath, chooses the start level and scorer on cfg's held-out
// training images (the same split, from cfg's seed and val_fraction, that
// training held out) and writes the model with the new choice to
// OutDir/model.safetensors. Nothing is trained. It lets a better held-out
// measure be applied to an existing model without the hour of training.
func Recalibrate(ctx context.Context, cfg Config, modelPath string, opts Options) (sum Summary, err error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	if len(cfg.StartTCandidates) == 0 && cfg.Scorer == "" && len(cfg.ScorerCandidates) == 0 && cfg.HeadTraining.Steps == 0 && !cfg.PatchMemory.Enabled() {
		return Summary{}, fmt.Errorf("train: recalibrate: the config chooses nothing (no start_t_candidates, scorer, scorer_candidates, head_training or patch_memory)")
	}
	if cfg.ValFraction <= 0 {
		return Summary{}, fmt.Errorf("train: recalibrate: val_fraction is 0, so there are no held-out images")
	}
	defer torchrt.Pin()()
	torchrt.SetThreads(cfg.Threads)
	dev, err := torchrt.ParseDevice(cfg.Device)
	if err != nil {
		return Summary{}, err
	}
	logf, err := openLog(cfg.OutDir)
	if err != nil {
		return Summary{}, err
	}
	defer logf.Close()
	t := &trainer{cfg: cfg, opts: opts, log: slog.New(slog.NewJSONHandler(logf, nil)), start: time.Now()}
	err = torchrt.Do(func() error {
		var err error
		sum, err = t.recalibrate(ctx, modelPath, dev)
		return err
	})
	if err != nil {
		return Summary{}, err
	}
	return sum, nil
}

func (t *trainer) recalibrate(ctx context.Context, modelPath string, dev gotch.Device) (Summary, error) {
	cfg := t.cfg
	ix, err := cfg.Data.Open()
	if err != nil {
		return Summary{}, err
	}
	trainSamples, valSamples := holdOut(ix.Select(datasets.Train), cfg.ValFraction, cfg.Seed)
	if t.m, _, err = model.Open(modelPath, dev); err != nil {
		return Summary{}, err
	}
	defer t.m.Free()
	lc := datasets.LoaderConfig{Size: t.m.Config.ImageSize, BatchSize: cfg.BatchSize, Workers: cfg.Data.Workers, Seed: cfg.Seed}
	if t.val, err = datasets.NewLoader(valSamples, lc); err != nil {
		return Summary{}, fmt.Errorf("train: %w", err)
	}
	t.st.Stage = StageDone
	t.log.Info("recalibrate", "model", modelPath, "val_images", len(valSamples))
	if cfg.PatchMemory.Enabled() {
		// A model without a memory gets one; a model with one builds it
		// again (from this config's training images, as this config
		// chooses it).
		if err := t.m.UsePatchMemory(cfg.PatchMemory); err != nil {
			return Summary{}, err
		}
		if err := t.buildPatchMemory(ctx, trainSamples); err != nil {
			return Summary{}, err
		}
	}
	if err := t.calibrate(ctx); err != nil {
		return Summary{}, err
	}
	if cfg.HeadTraining.Steps > 0 && cfg.Head.Enabled() {
		// A model without a head gets one; a model with one trains it again.
		if t.m.Head == nil {
			torchrt.ManualSeed(int64(cfg.Seed))
			if err := t.m.AddHead(cfg.Head); err != nil {
				return Summary{}, err
			}
		}
		if err := t.trainHead(ctx, trainSamples); err != nil {
			return Summary{}, err
		}
	}
	out := filepath.Join(cfg.OutDir, ModelFile)
	if err := t.m.Save(out, map[string]string{"diad.recalibrated_from": modelPath}); err != nil {
		return Summary{}, err
	}
	return Summary{Seconds: time.Since(t.start).Seconds(), Model: out, Stopped: StopRecalibrated}, nil
}
