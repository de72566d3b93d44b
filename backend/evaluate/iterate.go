package evaluate

import (
	"context"
	"iter"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/results"
)

// Batch is images to score and their image ids: an image's noise derives
// from its id (results.ImageSeed), so its result does not depend on its
// batch, its shard or the images that could not be read.
type Batch struct {
	Items []datasets.Item
	IDs   []int64
}

// ScoredBatch is a Batch with its outcome, and the input tensor, which is
// valid only inside the callback that receives it.
type ScoredBatch struct {
	Batch
	X      *ts.Tensor
	Scored []Scored
}

// ScoreOptions say what a scoring pass computes beside the scores.
type ScoreOptions struct {
	Seed        uint64             // the run's seed
	RecordSteps bool               // each step's image score (Scored.StepScores)
	Hook        diffusion.Callback // sees every step of every batch (nil: none)
}

// ScoreEach is the one scoring loop of Test, Predict and the quality
// benchmark: it scores the batches in turn and hands each to use. The first
// error of a batch, of the model or of use ends it; so does ctx.
func (d *Detector) ScoreEach(ctx context.Context, batches iter.Seq2[Batch, error], opts ScoreOptions, use func(ScoredBatch) error) error {
	for b, err := range batches {
		if err != nil {
			return err
		}
		if len(b.Items) == 0 {
			continue
		}
		if err := d.scoreAndUse(ctx, b, opts, use); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// scoreAndUse scores one batch and hands it to use, freeing its tensor
// afterwards.
func (d *Detector) scoreAndUse(ctx context.Context, b Batch, opts ScoreOptions, use func(ScoredBatch) error) error {
	size := d.Model.Config.ImageSize
	x := torchrt.ImageBatch(datasets.Batch{Items: b.Items}.Images(), len(b.Items), size, d.Model.Device())
	defer x.MustDrop()
	seeds := make([]uint64, len(b.IDs))
	for i, id := range b.IDs {
		seeds[i] = results.ImageSeed(opts.Seed, id)
	}
	groups := make([]string, len(b.Items))
	for i, it := range b.Items {
		groups[i] = it.Sample.Category
	}
	scored, err := d.ScoreBatch(ctx, x, seeds, groups, opts.RecordSteps, opts.Hook)
	if err != nil {
		return err
	}
	return use(ScoredBatch{Batch: b, X: x, Scored: scored})
}

// Batches are the split's images in the loader's order, with their ids.
func (s TestSplit) Batches(ctx context.Context) iter.Seq2[Batch, error] {
	return func(yield func(Batch, error) bool) {
		if s.Loader == nil {
			return // a shard that owns none of the split
		}
		idOf := make(map[string]int64, len(s.Samples))
		for i, smp := range s.Samples {
			idOf[smp.Path] = s.IDs[i]
		}
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // ends the loader when the consumer stops early
		for r := range s.Loader.Epoch(ctx, 0, 0) {
			if r.Err != nil {
				yield(Batch{}, r.Err)
				return
			}
			ids := make([]int64, len(r.Batch.Items))
			for i, it := range r.Batch.Items {
				ids[i] = idOf[it.Sample.Path]
			}
			if !yield(Batch{Items: r.Batch.Items, IDs: ids}, nil) {
				return
			}
		}
	}
}

// PredictedImage decodes a step's predicted clean latent into images
// [B, 3, S, S] (ImageNet-normalised), which the caller frees.
func (d *Detector) PredictedImage(s diffusion.Step) *ts.Tensor {
	var dec *ts.Tensor
	torchrt.NoGrad(func() { dec = d.Model.AE.Decode(s.X0) })
	return dec
}

// scoredRows are what a scoring command writes: a row and a quantised map
// per image, and for a shard the exact maps too (the merge computes its
// metrics from them).
type scoredRows struct {
	images []results.ImageRow
	maps   []results.MapRow
	pixels []results.PixelRow
}

// add appends one image's rows; the exact map is kept only for a shard.
func (o *scoredRows) add(row results.ImageRow, size int, m []float32, mask []bool, shard bool) {
	o.images = append(o.images, row)
	o.maps = append(o.maps, results.Quantize(row.RunID, row.ImageID, size, size, m))
	if shard {
		o.pixels = append(o.pixels, results.NewPixelRow(row.RunID, row.ImageID, size, size, m, mask))
	}
}

// timings are a run's timing record, the same keys for every kind of run:
// seconds of inference, seconds in all, and inference seconds per image.
func timings(start, inferred time.Time, images int) map[string]float64 {
	infer := inferred.Sub(start).Seconds()
	return map[string]float64{"inference": infer, "total": time.Since(start).Seconds(), "per_image": infer / float64(max(images, 1))}
}

// writeShard writes the rows as cfg.Shard's partition of run.RunID: of a
// split of splitImages images, unreadable naming those that could not be
// read.
func writeShard(cfg Config, run results.RunMeta, splitImages int, unreadable []int64, rows scoredRows) (string, error) {
	part := results.Shard{Info: results.ShardInfo{Index: cfg.Shard.Index, Count: cfg.Shard.Count, SplitImages: splitImages,
		Threshold: cfg.Threshold, Metrics: cfg.Metrics, Unreadable: unreadable, Run: run}, Images: rows.images, Maps: rows.maps, Pixels: rows.pixels}
	store := results.Store{Root: cfg.ResultsDir}
	if err := store.WriteShard(part); err != nil {
		return "", err
	}
	return store.ShardDir(run.RunID, cfg.Shard.DirName()), nil
}
