package evaluate

import (
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// Prediction is one new image's verdict.
type Prediction struct {
	Path      string  `json:"path"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Anomalous bool    `json:"anomalous"`
	Overlay   string  `json:"overlay,omitempty"`
}

// PredictConfig adds the prediction's outputs to an evaluation config.
type PredictConfig struct {
	Config
	// OverlayDir receives <name>_heatmap.png overlays (none if empty).
	OverlayDir string
	// Store writes a results run of kind "predict" when true.
	Store bool
}

// Predict scores image files against a fixed threshold (cfg.Threshold must be
// a number: there are no labels to choose one from).
func Predict(ctx context.Context, cfg PredictConfig, paths []string) ([]Prediction, string, error) {
	v, err := strconv.ParseFloat(cfg.Threshold, 64)
	th := results.ThresholdInfo{Value: v, Policy: "manual"}
	if err != nil || math.IsNaN(v) {
		return nil, "", fmt.Errorf("predict: give the decision threshold as a number (from a test run's threshold)")
	}
	p, err := Open(cfg.Config)
	if err != nil {
		return nil, "", err
	}
	defer p.Free()
	size := p.Model.Config.ImageSize
	bs := max(cfg.BatchSize, 1)
	start := time.Now()
	runID := results.NewRunID(start)
	var preds []Prediction
	var rows []results.ImageRow
	var maps []results.MapRow
	for lo := 0; lo < len(paths); lo += bs {
		hi := min(lo+bs, len(paths))
		var items []datasets.Item
		for _, path := range paths[lo:hi] {
			it, err := datasets.LoadItem(datasets.Sample{Path: path, Split: "predict"}, size)
			if err != nil {
				return nil, "", err
			}
			items = append(items, it)
		}
		x := torchrt.ImageBatch(datasets.Batch{Items: items}.Images(), len(items), size, p.Model.Device())
		seeds := make([]uint64, len(items))
		for i := range seeds {
			seeds[i] = results.ImageSeed(cfg.Seed, int64(lo+i))
		}
		scored, err := p.ScoreBatch(ctx, x, seeds, false, nil)
		x.MustDrop()
		if err != nil {
			return nil, "", err
		}
		for i, it := range items {
			pr := Prediction{Path: it.Sample.Path, Score: scored[i].Score, Threshold: th.Value, Anomalous: shared.Predicted(scored[i].Score, th.Value)}
			if cfg.OverlayDir != "" {
				base := datasets.Denormalize(it.Image, size)
				ov := visual.Overlay(base, scored[i].Map, visual.ThresholdScale(th.Value), 0.6)
				name := strings.TrimSuffix(filepath.Base(it.Sample.Path), filepath.Ext(it.Sample.Path)) + "_heatmap.png"
				pr.Overlay = filepath.Join(cfg.OverlayDir, name)
				if err := writePNG(pr.Overlay, ov); err != nil {
					return nil, "", err
				}
			}
			preds = append(preds, pr)
			id := int64(len(rows))
			pred := int32(0)
			if pr.Anomalous {
				pred = 1
			}
			rows = append(rows, results.ImageRow{RunID: runID, ImageID: id, Path: it.Sample.Path, Split: "predict", GroundTruth: -1,
				Score: pr.Score, Scorer: p.Scorer.Kind(), Threshold: th.Value, Predicted: pred, CreatedAt: start.UTC()})
			maps = append(maps, results.Quantize(runID, id, size, size, scored[i].Map))
		}
	}
	if !cfg.Store {
		return preds, "", nil
	}
	run := results.Run{Images: rows, Maps: maps}
	run.Meta = meta(runID, "predict", cfg.Config, p, datasets.Index{}, th, start.UTC())
	run.Meta.Timings = map[string]float64{"total": time.Since(start).Seconds()}
	if err := (results.Store{Root: cfg.ResultsDir}).Write(run); err != nil {
		return nil, "", err
	}
	return preds, runID, nil
}

func writePNG(path string, img image.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("overlay %s: %w", path, err)
	}
	return f.Close()
}
