// Package merge joins the partitions that the shards of a run wrote (see
// package shard) into one run that the server, the browser client and
// exports open like any other: it checks that the partitions are complete
// and of one making (the same checkpoint, scorer, sampler, seed and split),
// then computes the paper's metrics over every image exactly - from the
// shards' unquantised maps, through the same code as `diad test`, so that
// the result equals a single-process run's bit for bit.
package merge

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/summary"
	"github.com/diad-project/diad/results"
)

// Report is a merge's outcome.
type Report struct {
	RunID  string
	Kind   string
	Shards int
	Images int
	// Unreadable counts a predict run's inputs no shard could decode.
	Unreadable int
	Table      metrics.Table // empty for predict runs
	Threshold  results.ThresholdInfo
	// Ignored are folders that look like partitions but are not finished.
	Ignored []results.Incomplete
	Seconds float64
}

// joined are the partitions' images, maps and timings, put together.
type joined struct {
	images             []summary.Image
	maps               []results.MapRow
	owner              map[int64]string // image id -> the partition holding it
	unreadable         map[int64]bool
	inferSum, inferMax float64
}

// add joins the partitions, checking that each holds a row, a map and an
// exact map per image and that no image is in two.
func (j *joined) add(parts []results.Partition) error {
	j.owner, j.unreadable = map[int64]string{}, map[int64]bool{}
	for _, p := range parts {
		for _, id := range p.Info.Unreadable {
			j.unreadable[id] = true
		}
		im, err := p.Images()
		if err != nil {
			return err
		}
		px, err := p.Pixels()
		if err != nil {
			return err
		}
		mp, err := p.Maps()
		if err != nil {
			return err
		}
		if len(px) != len(im) || len(mp) != len(im) {
			return fmt.Errorf("merge: %s holds %d images, %d maps and %d exact maps", p.Dir, len(im), len(mp), len(px))
		}
		pixByID := make(map[int64]results.PixelRow, len(px))
		for _, r := range px {
			pixByID[r.ImageID] = r
		}
		for _, r := range im {
			if prev, dup := j.owner[r.ImageID]; dup {
				return fmt.Errorf("merge: image id %d (%s) is in %s and in %s", r.ImageID, r.Path, prev, p.Dir)
			}
			j.owner[r.ImageID] = p.Dir
			pr, ok := pixByID[r.ImageID]
			if !ok {
				return fmt.Errorf("merge: %s has no exact map of image %d", p.Dir, r.ImageID)
			}
			m, mask, err := pr.Values()
			if err != nil {
				return fmt.Errorf("merge: %s: %w", p.Dir, err)
			}
			j.images = append(j.images, summary.Image{Row: r, Width: int(pr.Width), Height: int(pr.Height), Map: m, Mask: mask})
		}
		j.maps = append(j.maps, mp...)
		t := p.Info.Run.Timings["inference"]
		j.inferSum += t
		j.inferMax = max(j.inferMax, t)
	}
	return nil
}

// checkWhole says which ids are missing when the partitions do not hold
// every image of the split (scored or unreadable).
func (j *joined) checkWhole(splitImages int) error {
	if len(j.images)+len(j.unreadable) == splitImages {
		return nil
	}
	var missing []string
	for id := 0; id < splitImages && len(missing) < 5; id++ {
		if _, ok := j.owner[int64(id)]; !ok && !j.unreadable[int64(id)] {
			missing = append(missing, fmt.Sprint(id))
		}
	}
	return fmt.Errorf("merge: the shards hold %d of the split's %d images (missing ids %s...): a shard scored a different dataset", len(j.images), splitImages, strings.Join(missing, ", "))
}

// Run merges the partitions of run runID in store.
func Run(store results.Store, runID string, now time.Time) (Report, error) {
	start := time.Now()
	parts, incomplete, err := store.Partitions(runID)
	if err != nil {
		return Report{}, err
	}
	if len(parts) == 0 {
		msg := fmt.Sprintf("merge: run %s has no finished shard partitions in %s", runID, store.Dir(runID))
		for _, in := range incomplete {
			msg += fmt.Sprintf("; %s: %s", in.Dir, in.Reason)
		}
		return Report{}, fmt.Errorf("%s", msg)
	}
	if err := checkComplete(parts, incomplete); err != nil {
		return Report{}, err
	}
	if err := checkSameMaking(parts); err != nil {
		return Report{}, err
	}
	first := parts[0].Info
	var j joined
	if err := j.add(parts); err != nil {
		return Report{}, err
	}
	images, maps, unreadable := j.images, j.maps, j.unreadable
	if err := j.checkWhole(first.SplitImages); err != nil {
		return Report{}, err
	}
	sort.Slice(images, func(a, b int) bool { return images[a].Row.ImageID < images[b].Row.ImageID })
	sort.Slice(maps, func(a, b int) bool { return maps[a].ImageID < maps[b].ImageID })
	rows := make([]results.ImageRow, len(images))
	for i, im := range images {
		rows[i] = im.Row
	}
	meta := first.Run
	meta.CreatedAt = now.UTC()
	meta.Shards = first.Count
	rep := Report{RunID: runID, Kind: meta.Kind, Shards: first.Count, Images: len(rows), Unreadable: len(unreadable), Ignored: incomplete}
	var metricRows []results.MetricRow
	if meta.Kind == "test" {
		rep.Table = summary.Table(images, first.Metrics)
		metricRows = summary.MetricRows(runID, rep.Table)
	}
	th, err := summary.ChooseThreshold(first.Threshold, rows)
	if err != nil {
		return Report{}, fmt.Errorf("merge: %w", err)
	}
	results.ApplyThreshold(rows, th)
	meta.Threshold = th
	rep.Seconds = time.Since(start).Seconds()
	meta.Timings = map[string]float64{"inference_sum": j.inferSum, "inference_slowest_shard": j.inferMax, "merge": rep.Seconds,
		"per_image": j.inferSum / float64(max(len(rows), 1))}
	// A threshold changed by hand after an earlier merge stays.
	keep := func(old results.RunMeta) (results.ThresholdInfo, bool) {
		return old.Threshold, old.Threshold.Policy != th.Policy
	}
	if err := store.WriteMerged(results.Run{Meta: meta, Images: rows, Maps: maps, Metrics: metricRows}, keep); err != nil {
		return Report{}, err
	}
	m, err := store.Meta(runID)
	if err != nil {
		return Report{}, err
	}
	rep.Threshold = m.Threshold
	return rep, nil
}

// checkComplete requires one partition of every shard of one split.
func checkComplete(parts []results.Partition, incomplete []results.Incomplete) error {
	n := parts[0].Info.Count
	for _, p := range parts[1:] {
		if p.Info.Count != n {
			return fmt.Errorf("merge: mismatched shard counts: %s is one of %d shards, %s one of %d (remove the partitions of the split you do not want)",
				parts[0].Dir, n, p.Dir, p.Info.Count)
		}
	}
	have := map[int]bool{}
	for _, p := range parts {
		have[p.Info.Index] = true
	}
	var missing []string
	for i := 0; i < n; i++ {
		if !have[i] {
			name := (results.ShardInfo{Index: i, Count: n}).Spec().DirName()
			why := "not written"
			for _, in := range incomplete {
				if strings.Contains(in.Dir, name) {
					why = in.Reason
				}
			}
			missing = append(missing, fmt.Sprintf("%s (%s)", name, why))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("merge: %d of %d shards are missing: %s; run them (again) and merge", len(missing), n, strings.Join(missing, ", "))
	}
	return nil
}

// checkSameMaking requires every partition to come from the same model,
// scorer, sampler, seed and split as the first.
func checkSameMaking(parts []results.Partition) error {
	a := parts[0]
	asJSON := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Sprintf("%v", v)
		}
		return string(b)
	}
	facts := func(i results.ShardInfo) [][2]string {
		r := i.Run
		return [][2]string{
			{"kind", r.Kind},
			{"checkpoint (SHA-256)", r.CheckpointSHA},
			{"preset", r.Preset},
			{"scorer", r.Scorer},
			{"sampler", asJSON(r.Sampler)},
			{"seed", fmt.Sprint(r.Seed)},
			{"batch invariance", fmt.Sprint(r.BatchInvariant)},
			{"feature extractor", asJSON(r.Features)},
			{"dataset layout and categories", asJSON([]any{r.Dataset.Layout, r.Dataset.Categories})},
			{"split size", fmt.Sprint(i.SplitImages)},
			{"threshold", i.Threshold},
			{"metrics settings", asJSON(i.Metrics)},
		}
	}
	want := facts(a.Info)
	for _, p := range parts[1:] {
		for k, f := range facts(p.Info) {
			if f[1] != want[k][1] {
				return fmt.Errorf("merge: %s and %s differ in %s (%s against %s): they are not shards of one run", p.Dir, a.Dir, f[0], short(f[1]), short(want[k][1]))
			}
		}
	}
	return nil
}

func short(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}
