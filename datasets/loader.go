package datasets

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
)

// Item is one decoded, resized, normalised sample.
type Item struct {
	Sample Sample
	// Image is 3*Size*Size ImageNet-normalised floats, channel-major.
	Image []float32
	// Mask is Size*Size ground-truth pixels (all false for normal samples).
	Mask []bool
}

// LoadItem decodes and prepares one sample at size x size.
func LoadItem(s Sample, size int) (Item, error) {
	img, err := DecodeFile(s.Path)
	if err != nil {
		return Item{}, err
	}
	it := Item{Sample: s, Image: make([]float32, 3*size*size)}
	NormalizeCHW(ResizeRGB(img, size), it.Image)
	if it.Mask, err = LoadMask(s, size); err != nil {
		return Item{}, err
	}
	return it, nil
}

// LoadMask reads a sample's ground-truth mask at size x size (all false for
// a sample without one: a normal image).
func LoadMask(s Sample, size int) ([]bool, error) {
	if s.MaskPath == "" {
		return make([]bool, size*size), nil
	}
	m, err := DecodeFile(s.MaskPath)
	if err != nil {
		return nil, fmt.Errorf("mask of %s: %w", s.Path, err)
	}
	return ResizeMask(m, size), nil
}

// Batch is consecutive items of an epoch.
type Batch struct {
	Index int // batch number within the epoch
	Items []Item
}

// Images concatenates the batch's images ([B, 3, S, S] in C order).
func (b Batch) Images() []float32 {
	if len(b.Items) == 0 {
		return nil
	}
	n := len(b.Items[0].Image)
	out := make([]float32, 0, n*len(b.Items))
	for _, it := range b.Items {
		out = append(out, it.Image...)
	}
	return out
}

// LoaderConfig configures batching.
type LoaderConfig struct {
	Size      int  `yaml:"size"`
	BatchSize int  `yaml:"batch_size"`
	Shuffle   bool `yaml:"shuffle"`
	DropLast  bool `yaml:"drop_last"`
	// Workers decode in parallel (0 = number of CPUs); Prefetch batches are
	// kept ready ahead of the consumer (0 = 2).
	Workers  int    `yaml:"workers"`
	Prefetch int    `yaml:"prefetch"`
	Seed     uint64 `yaml:"seed"`
}

// Loader produces batches of a fixed sample list.
type Loader struct {
	cfg     LoaderConfig
	samples []Sample
}

// NewLoader checks the configuration.
func NewLoader(samples []Sample, cfg LoaderConfig) (*Loader, error) {
	if len(samples) == 0 {
		return nil, fmt.Errorf("datasets: no samples to load")
	}
	if cfg.Size <= 0 || cfg.BatchSize <= 0 {
		return nil, fmt.Errorf("datasets: size and batch size must be positive")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 2
	}
	return &Loader{cfg: cfg, samples: samples}, nil
}

// BatchesPerEpoch is the number of batches an epoch yields.
func (l *Loader) BatchesPerEpoch() int {
	n := len(l.samples) / l.cfg.BatchSize
	if !l.cfg.DropLast && len(l.samples)%l.cfg.BatchSize != 0 {
		n++
	}
	return n
}

// Order is the sample order of an epoch: a permutation that depends only on
// the seed and the epoch number, so a resumed run sees the same order.
func (l *Loader) Order(epoch int) []int {
	if l.cfg.Shuffle {
		return Permutation(len(l.samples), l.cfg.Seed, uint64(epoch))
	}
	idx := make([]int, len(l.samples))
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// Permutation is a shuffle of 0..n-1 that depends only on seed and stream
// (a Loader's epoch order, a training run's held-out split).
func Permutation(n int, seed, stream uint64) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	r := rand.New(rand.NewPCG(seed, stream))
	r.Shuffle(n, func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	return idx
}

// Result is a batch or the error that ended the epoch.
type Result struct {
	Batch Batch
	Err   error
}

// Epoch streams the batches of an epoch from batch number `from` on, in order,
// decoding ahead on worker goroutines. The channel closes at the end of the
// epoch, after an error, or when ctx is cancelled.
func (l *Loader) Epoch(ctx context.Context, epoch, from int) <-chan Result {
	order := l.Order(epoch)
	out := make(chan Result, l.cfg.Prefetch)
	ctx, cancel := context.WithCancel(ctx)
	jobs := make(chan loadJob)
	results := make(chan loaded, l.cfg.BatchSize*l.cfg.Prefetch)
	var wg sync.WaitGroup
	for w := 0; w < l.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.load(ctx, jobs, results)
		}()
	}
	// At most Prefetch batches ahead of delivery.
	window := make(chan struct{}, l.cfg.Prefetch+1)
	go l.feed(ctx, order, from, window, jobs)
	go func() { wg.Wait(); close(results) }()
	go func() {
		defer close(out)
		defer cancel()
		l.reassemble(ctx, len(order), from, window, results, out)
	}()
	return out
}

// loadJob is one sample to load into a batch's slot.
type loadJob struct{ batch, slot, sample int }

// loaded is a loadJob's item, or why it could not be loaded.
type loaded struct {
	batch, slot int
	item        Item
	err         error
}

// load is a worker: it loads the jobs' samples until jobs closes.
func (l *Loader) load(ctx context.Context, jobs <-chan loadJob, results chan<- loaded) {
	for j := range jobs {
		it, err := LoadItem(l.samples[j.sample], l.cfg.Size)
		select {
		case results <- loaded{j.batch, j.slot, it, err}:
		case <-ctx.Done():
			return
		}
	}
}

// feed hands out the samples of batches from.. in order, a batch only when
// the window has room for it; it closes jobs at the end.
func (l *Loader) feed(ctx context.Context, order []int, from int, window chan<- struct{}, jobs chan<- loadJob) {
	defer close(jobs)
	for b := from; b < l.BatchesPerEpoch(); b++ {
		select {
		case window <- struct{}{}:
		case <-ctx.Done():
			return
		}
		lo := b * l.cfg.BatchSize
		hi := min(lo+l.cfg.BatchSize, len(order))
		for k := lo; k < hi; k++ {
			select {
			case jobs <- loadJob{b, k - lo, order[k]}:
			case <-ctx.Done():
				return
			}
		}
	}
}

// reassemble puts the loaded items back into their batches and delivers the
// batches in order, freeing a window slot for each; the first error ends
// the epoch.
func (l *Loader) reassemble(ctx context.Context, samples, from int, window <-chan struct{}, results <-chan loaded, out chan<- Result) {
	nb := l.BatchesPerEpoch()
	pending := map[int][]Item{}
	filled := map[int]int{}
	next := from
	for r := range results {
		if r.err != nil {
			select {
			case out <- Result{Err: r.err}:
			case <-ctx.Done():
			}
			return
		}
		lo := r.batch * l.cfg.BatchSize
		size := min(lo+l.cfg.BatchSize, samples) - lo
		if pending[r.batch] == nil {
			pending[r.batch] = make([]Item, size)
		}
		pending[r.batch][r.slot] = r.item
		filled[r.batch]++
		for next < nb && filled[next] == len(pending[next]) && pending[next] != nil {
			select {
			case out <- Result{Batch: Batch{Index: next, Items: pending[next]}}:
			case <-ctx.Done():
				return
			}
			delete(pending, next)
			delete(filled, next)
			<-window
			next++
		}
		if next == nb {
			return
		}
	}
}
