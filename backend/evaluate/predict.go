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

// Prediction is one new image's verdict, or why it has none.
type Prediction struct {
	Path      string  `json:"path"`
	Score     float64 `json:"score"`
	Threshold float64 `json:"threshold"`
	Anomalous bool    `json:"anomalous"`
	Overlay   string  `json:"overlay,omitempty"`
	// Error says why the image could not be scored (the others still are).
	Error string `json:"error,omitempty"`
}

// PartialError is Predict's error when some images could not be read: the
// others were scored (and stored) all the same.
type PartialError struct {
	Failed []Prediction
}

func (e *PartialError) Error() string {
	msg := fmt.Sprintf("predict: %d image(s) could not be scored", len(e.Failed))
	for i, f := range e.Failed {
		if i == 3 {
			msg += fmt.Sprintf("; and %d more", len(e.Failed)-3)
			break
		}
		msg += "; " + f.Error
	}
	return msg
}

// overlayNames gives each input a distinct overlay file name: its base name
// with _heatmap.png, prefixed with as many parent folders as it takes to
// tell inputs with the same base name apart (a/000.png, b/000.png ->
// a_000_heatmap.png, b_000_heatmap.png).
func overlayNames(paths []string) []string {
	names := make([]string, len(paths))
	parts := make([][]string, len(paths))
	for i, p := range paths {
		parts[i] = strings.Split(filepath.ToSlash(filepath.Clean(p)), "/")
	}
	depth := make([]int, len(paths))
	for i := range depth {
		depth[i] = 1
	}
	name := func(i int) string {
		ps := parts[i]
		k := min(depth[i], len(ps))
		base := strings.Join(ps[len(ps)-k:], "_")
		return strings.TrimSuffix(base, filepath.Ext(base)) + "_heatmap.png"
	}
	for round := 0; round < 64; round++ {
		seen := map[string][]int{}
		for i := range paths {
			names[i] = name(i)
			seen[names[i]] = append(seen[names[i]], i)
		}
		clash := false
		for _, idx := range seen {
			if len(idx) < 2 {
				continue
			}
			for _, i := range idx {
				if depth[i] < len(parts[i]) {
					depth[i]++
					clash = true
				}
			}
		}
		if !clash {
			break
		}
	}
	// The same file given twice (or paths equal after cleaning): number them.
	count := map[string]int{}
	for i, n := range names {
		count[n]++
		if c := count[n]; c > 1 {
			names[i] = strings.TrimSuffix(n, "_heatmap.png") + fmt.Sprintf("_%d_heatmap.png", c)
		}
	}
	return names
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
// a number: there are no labels to choose one from). An argument that is a
// folder stands for every image below it. With cfg.Shard it scores only the
// shard's images (by a hash of each image's path relative to its folder)
// and writes them as a partition of run cfg.RunID for `diad merge`; image
// ids are positions among all inputs, the same in every shard.
func Predict(ctx context.Context, cfg PredictConfig, args []string) ([]Prediction, string, error) {
	v, err := strconv.ParseFloat(cfg.Threshold, 64)
	th := results.ThresholdInfo{Value: v, Policy: "manual"}
	if err != nil || math.IsNaN(v) {
		return nil, "", fmt.Errorf("predict: give the decision threshold as a number (from a test run's threshold)")
	}
	inputs, err := datasets.ExpandInputs(args)
	if err != nil {
		return nil, "", fmt.Errorf("predict: %w", err)
	}
	start := time.Now()
	if cfg.Shard != nil {
		if err := cfg.Shard.Validate(); err != nil {
			return nil, "", fmt.Errorf("predict: %w", err)
		}
		cfg.Store = true
	}
	runID, err := cfg.runID(start)
	if err != nil {
		return nil, "", fmt.Errorf("predict: %w", err)
	}
	paths := make([]string, len(inputs))
	var mine []int // positions of the inputs this process scores
	for i, in := range inputs {
		paths[i] = in.Path
		if cfg.Shard == nil || cfg.Shard.Owns(in.Rel) {
			mine = append(mine, i)
		}
	}
	det, err := Open(cfg.Config)
	if err != nil {
		return nil, "", err
	}
	defer det.Free()
	size := det.Model.Config.ImageSize
	bs := max(cfg.BatchSize, 1)
	var preds []Prediction
	var failed []Prediction
	var failedIDs []int64
	var rows []results.ImageRow
	var maps []results.MapRow
	var pixels []results.PixelRow
	overlays := overlayNames(paths)
	for lo := 0; lo < len(mine); lo += bs {
		hi := min(lo+bs, len(mine))
		var items []datasets.Item
		var index []int // items[k] is paths[index[k]]
		for _, i := range mine[lo:hi] {
			path := paths[i]
			it, err := datasets.LoadItem(datasets.Sample{Path: path, Split: "predict"}, size)
			if err != nil {
				// One unreadable image does not stop the others.
				f := Prediction{Path: path, Threshold: th.Value, Score: math.NaN(), Error: err.Error()}
				preds = append(preds, f)
				failed = append(failed, f)
				failedIDs = append(failedIDs, int64(i))
				continue
			}
			items = append(items, it)
			index = append(index, i)
		}
		if len(items) == 0 {
			continue
		}
		x := torchrt.ImageBatch(datasets.Batch{Items: items}.Images(), len(items), size, det.Model.Device())
		seeds := make([]uint64, len(items))
		for k := range seeds {
			// The image's position among all inputs, so its noise does
			// not depend on which others could be read, or on the shard.
			seeds[k] = results.ImageSeed(cfg.Seed, int64(index[k]))
		}
		scored, err := det.ScoreBatch(ctx, x, seeds, false, nil)
		x.MustDrop()
		if err != nil {
			return nil, "", err
		}
		for i, it := range items {
			pr := Prediction{Path: it.Sample.Path, Score: scored[i].Score, Threshold: th.Value, Anomalous: shared.Predicted(scored[i].Score, th.Value)}
			if cfg.OverlayDir != "" {
				base := datasets.Denormalize(it.Image, size)
				ov := visual.Overlay(base, scored[i].Map, visual.ThresholdScale(th.Value), 0.6)
				pr.Overlay = filepath.Join(cfg.OverlayDir, overlays[index[i]])
				if err := writePNG(pr.Overlay, ov); err != nil {
					return nil, "", err
				}
			}
			preds = append(preds, pr)
			id := int64(index[i])
			pred := int32(0)
			if pr.Anomalous {
				pred = 1
			}
			rows = append(rows, results.ImageRow{RunID: runID, ImageID: id, Path: it.Sample.Path, Split: "predict", GroundTruth: -1,
				Score: pr.Score, Scorer: det.Scorer.Kind(), Threshold: th.Value, Predicted: pred, CreatedAt: start.UTC()})
			maps = append(maps, results.Quantize(runID, id, size, size, scored[i].Map))
			if cfg.Shard != nil {
				pixels = append(pixels, results.NewPixelRow(runID, id, size, size, scored[i].Map, nil))
			}
		}
	}
	var partial error
	if len(failed) > 0 {
		partial = &PartialError{Failed: failed}
	}
	if cfg.Shard != nil {
		part := results.Shard{Info: results.ShardInfo{Index: cfg.Shard.Index, Count: cfg.Shard.Count, SplitImages: len(inputs),
			Threshold: cfg.Threshold, Metrics: cfg.Metrics, Unreadable: failedIDs}, Images: rows, Maps: maps, Pixels: pixels}
		part.Info.Run = meta(runID, "predict", cfg.Config, det, datasets.Index{}, results.ThresholdInfo{}, start.UTC())
		part.Info.Run.Timings = map[string]float64{"inference": time.Since(start).Seconds()}
		if err := (results.Store{Root: cfg.ResultsDir}).WriteShard(part); err != nil {
			return nil, "", err
		}
		return preds, runID, partial
	}
	if !cfg.Store || len(rows) == 0 {
		return preds, "", partial
	}
	run := results.Run{Images: rows, Maps: maps}
	run.Meta = meta(runID, "predict", cfg.Config, det, datasets.Index{}, th, start.UTC())
	run.Meta.Timings = map[string]float64{"total": time.Since(start).Seconds()}
	if err := (results.Store{Root: cfg.ResultsDir}).Write(run); err != nil {
		return nil, "", err
	}
	return preds, runID, partial
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
