package metrics

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// MVTec-AD's test split: 1725 images of 256x256 in 15 categories, about 73% anomalous.
const (
	mvtecImages     = 1725
	mvtecCategories = 15
	mvtecSide       = 256
)

var (
	mvtecOnce sync.Once
	mvtecData []Category
)

// syntheticMVTec builds MVTec-sized evaluation input: smooth-ish normal scores,
// elliptical defects with raised scores, continuous values (few ties).
func syntheticMVTec() []Category {
	mvtecOnce.Do(func() {
		r := rand.New(rand.NewPCG(2024, 1))
		mvtecData = make([]Category, mvtecCategories)
		for i := 0; i < mvtecImages; i++ {
			c := &mvtecData[i%mvtecCategories]
			c.Name = fmt.Sprintf("cat%02d", i%mvtecCategories)
			anomalous := r.Float64() < 0.73
			m := Map{Width: mvtecSide, Height: mvtecSide, Scores: make([]float32, mvtecSide*mvtecSide), Mask: make([]bool, mvtecSide*mvtecSide)}
			for p := range m.Scores {
				m.Scores[p] = float32(r.ExpFloat64() * 0.1)
			}
			if anomalous {
				for d := 1 + r.IntN(3); d > 0; d-- {
					cx, cy := r.Float64()*mvtecSide, r.Float64()*mvtecSide
					ax, ay := 3+r.Float64()*30, 3+r.Float64()*30
					for y := 0; y < mvtecSide; y++ {
						for x := 0; x < mvtecSide; x++ {
							dx, dy := (float64(x)-cx)/ax, (float64(y)-cy)/ay
							if q := dx*dx + dy*dy; q <= 1 {
								m.Mask[y*mvtecSide+x] = true
								m.Scores[y*mvtecSide+x] += float32(0.3 * (1 - q) * r.Float64())
							}
						}
					}
				}
			}
			best := float32(0)
			for _, s := range m.Scores {
				best = max(best, s)
			}
			c.Maps = append(c.Maps, m)
			c.ImageScores = append(c.ImageScores, best)
			c.ImageLabels = append(c.ImageLabels, anomalous)
		}
	})
	return mvtecData
}

// peakRSSMiB reads the process's peak resident set (VmHWM) from /proc.
func peakRSSMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			var kb float64
			if _, err := fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:")), "%f", &kb); err != nil {
				return -1
			}
			return kb / 1024
		}
	}
	return -1
}

// BenchmarkMVTecSized times each metric on an MVTec-AD-sized evaluation
// (1725 x 256 x 256 = 113M scored pixels, 15 categories). Reported: seconds per
// full evaluation, and the process's peak RSS (which includes the 565 MB of input).
func BenchmarkMVTecSized(b *testing.B) {
	cats := syntheticMVTec()
	runtime.GC()
	b.Logf("input ready, peak RSS so far %.0f MiB", peakRSSMiB())
	perCategory := func(b *testing.B, f func(c Category) error) {
		for i := 0; i < b.N; i++ {
			var wg sync.WaitGroup
			sem := make(chan struct{}, 2)
			for _, c := range cats {
				wg.Add(1)
				sem <- struct{}{}
				go func(c Category) {
					defer wg.Done()
					defer func() { <-sem }()
					if err := f(c); err != nil {
						b.Error(err)
					}
				}(c)
			}
			wg.Wait()
		}
		b.ReportMetric(peakRSSMiB(), "peakRSS-MiB")
	}
	b.Run("image-metrics", func(b *testing.B) {
		perCategory(b, func(c Category) error { _, err := BinaryMetrics(c.ImageScores, c.ImageLabels); return err })
	})
	b.Run("pixel-AUROC-AP-F1max", func(b *testing.B) {
		perCategory(b, func(c Category) error { _, err := PixelMetrics(c.Maps); return err })
	})
	b.Run("PRO", func(b *testing.B) {
		perCategory(b, func(c Category) error { _, err := PRO(c.Maps, ReferencePRO); return err })
	})
	b.Run("full-table", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			tab := Evaluate(cats, ReferenceEval)
			if tab.Mean().Errors != nil {
				b.Fatal(tab.Mean().Errors)
			}
		}
		b.ReportMetric(peakRSSMiB(), "peakRSS-MiB")
	})
}
