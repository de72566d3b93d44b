package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
	"gopkg.in/yaml.v3"

	"github.com/diad-project/diad/backend/calibrate"
	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// Stages of a run.
const (
	StageAutoencoder = "autoencoder"
	StageDenoiser    = "denoiser"
	// StageHead trains the anomaly head after the denoiser (not resumable:
	// it is minutes, and an interrupted one restarts from the denoiser's end).
	StageHead = "head"
	StageDone = "done"
)

// Files in OutDir.
const (
	CheckpointFile = "checkpoint.safetensors"  // model + optimizer + state, for resuming
	ModelFile      = "model.safetensors"       // final weights, for inference
	BestFile       = "best.safetensors"        // lowest validation loss so far
	NoEMAFile      = "model-noema.safetensors" // with EMA: the last step's weights
	LogFile        = "train.log.jsonl"
)

// Metadata keys of the training checkpoint.
const (
	metaState  = "diad.train_state"
	metaConfig = "diad.train_config"
	optPrefix  = "optimizer."
)

// Event reports progress to the caller (CLI progress bar, server websockets).
// Step events carry the stage, its step and its total.
type Event struct {
	Kind         string    `json:"kind"` // shared.Event*
	Time         time.Time `json:"time"`
	Stage        string    `json:"stage"`
	Step         int       `json:"step"`
	TotalSteps   int       `json:"total_steps"` // 0 when only a time budget bounds the run
	Epoch        int       `json:"epoch"`
	Loss         float64   `json:"loss"`
	ValLoss      float64   `json:"val_loss,omitempty"`
	ImagesPerSec float64   `json:"images_per_sec"`
	ETASeconds   float64   `json:"eta_seconds,omitempty"`
	Message      string    `json:"message,omitempty"`
}

// Options are the run's side channels.
type Options struct {
	// OnEvent receives progress events (may be nil); presenting them (the
	// CLI's progress bar, the server's websockets) is the caller's job.
	OnEvent func(Event)
	// Resume continues from OutDir/checkpoint.safetensors when it exists.
	Resume bool
	// Force replaces a training run already in OutDir (its checkpoint,
	// models and log). Without Resume or Force such a run is refused, so
	// that no finished model is overwritten silently.
	Force bool

	// afterCheckpoint, in tests, runs after each checkpoint is written (the
	// kill tests end the process there, at an exact point).
	afterCheckpoint func(stage string, step int)
}

// Summary is the outcome of a run.
type Summary struct {
	Steps        int        `json:"steps"`
	Loss         float64    `json:"loss"`
	ValLoss      float64    `json:"val_loss"`
	ImagesPerSec float64    `json:"images_per_sec"`
	Seconds      float64    `json:"seconds"`
	Model        string     `json:"model"`
	Stopped      StopReason `json:"stopped"` // why training ended
}

// state is everything besides tensors that a resumed run needs.
type state struct {
	Stage   string `json:"stage"`
	Step    int    `json:"step"`  // optimizer steps completed in this stage
	Epoch   int    `json:"epoch"` // epoch of the next batch
	Batch   int    `json:"batch"` // next batch within the epoch
	Noise   []byte `json:"noise"`
	BestVal Float  `json:"best_val"` // +Inf before the first validation
	Images  int64  `json:"images"`
	// EMAUpdates counts the denoiser average's updates.
	EMAUpdates int64 `json:"ema_updates,omitempty"`
}

type trainer struct {
	cfg   Config
	opts  Options
	log   *slog.Logger
	m     *model.DiAD
	noise *diffusion.Noise
	train *datasets.Loader
	val   *datasets.Loader
	// trainSamples are the training images (without the held-out ones),
	// which the anomaly head learns on.
	trainSamples []datasets.Sample
	st           state
	opt          *optim.AdamW
	ema          *ema // denoiser stage with EMADecay > 0
	start        time.Time
	lastLoss     float64
	lastVal      float64
	// The batches since the last optimizer step (gradient accumulation),
	// and the images since window began (the speed the events report).
	micro        int
	window       time.Time
	windowImages int
}

// speedWindow is how long the images-per-second figure averages over.
const speedWindow = 10 * time.Second

// StopReason says why a run ended (Summary.Stopped).
type StopReason string

// Why a run ended.
const (
	StopMaxSteps     StopReason = "max_steps"    // the step budget: a finished model
	StopMaxEpochs    StopReason = "max_epochs"   // the epoch budget: a finished model
	StopMaxDuration  StopReason = "max_duration" // the time budget: a finished model once the denoiser trained, else a checkpoint
	StopCancelled    StopReason = "cancelled"    // the context ended: a checkpoint to resume
	StopDone         StopReason = "done"         // resumed a run that had already finished
	StopRecalibrated StopReason = "recalibrated" // Recalibrate: the same weights, a new calibration

	stopNone StopReason = "" // the run goes on
)

// Run trains according to cfg. It returns when a budget is reached, ctx is
// cancelled (after saving a checkpoint), or an error occurs.
func Run(ctx context.Context, cfg Config, opts Options) (sum Summary, err error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	defer torchrt.Pin()()
	torchrt.SetThreads(cfg.Threads)
	if err := claimOutDir(cfg.OutDir, opts); err != nil {
		return Summary{}, err
	}
	created := !fileExists(cfg.OutDir)
	logf, err := openLog(cfg.OutDir)
	if err != nil {
		return Summary{}, err
	}
	defer logf.Close()
	defer func() {
		// A run that failed before its first checkpoint leaves nothing
		// behind in a folder it created.
		if err != nil && created && !fileExists(filepath.Join(cfg.OutDir, CheckpointFile)) {
			if rerr := errors.Join(logf.Close(), os.RemoveAll(cfg.OutDir)); rerr != nil {
				err = errors.Join(err, fmt.Errorf("train: clean up %s: %w", cfg.OutDir, rerr))
			}
		}
	}()
	t := &trainer{cfg: cfg, opts: opts, log: slog.New(slog.NewJSONHandler(logf, nil)), start: time.Now(), lastVal: math.NaN()}
	var stopped StopReason
	err = torchrt.Do(func() error {
		if err := t.setup(); err != nil {
			return err
		}
		defer t.m.Free()
		defer func() {
			if t.opt != nil {
				t.opt.Free()
			}
			if t.ema != nil {
				t.ema.free()
			}
		}()
		var err error
		stopped, err = t.loop(ctx)
		return err
	})
	if err != nil {
		return Summary{}, err
	}
	sum = Summary{Steps: t.st.Step, Loss: t.lastLoss, ValLoss: t.lastVal, Seconds: time.Since(t.start).Seconds(), Stopped: stopped}
	if sum.Seconds > 0 {
		sum.ImagesPerSec = float64(t.st.Images) / sum.Seconds
	}
	if t.st.Stage == StageDone {
		sum.Model = filepath.Join(cfg.OutDir, ModelFile)
	}
	t.log.Info("finished", "summary", sum)
	return sum, nil
}

func (t *trainer) emit(e Event) {
	e.Time = time.Now().UTC()
	if e.Stage == "" {
		e.Stage = t.st.Stage
	}
	if t.opts.OnEvent != nil {
		t.opts.OnEvent(e)
	}
}

func (t *trainer) setup() error {
	cfg := t.cfg
	dev, err := torchrt.ParseDevice(cfg.Device)
	if err != nil {
		return err
	}
	ix, err := cfg.Data.Open()
	if err != nil {
		return err
	}
	trainSamples, valSamples := holdOut(ix.Select(datasets.Train), cfg.ValFraction, cfg.Seed)
	ckpt := filepath.Join(cfg.OutDir, CheckpointFile)
	resuming := t.opts.Resume && fileExists(ckpt)
	var mcfg model.Config
	if resuming {
		if t.m, err = t.restore(ckpt, dev); err != nil {
			return err
		}
		mcfg = t.m.Config
	} else {
		if mcfg, err = t.modelConfig(); err != nil {
			return err
		}
		if cfg.Head.Enabled() {
			mcfg.Head = cfg.Head
		}
		torchrt.ManualSeed(int64(cfg.Seed))
		if t.m, err = model.New(mcfg, dev); err != nil {
			return err
		}
		if cfg.InitFrom != "" {
			if _, err := t.m.InitFromStableDiffusion(cfg.InitFrom); err != nil {
				return err
			}
		}
		if cfg.InitWeights != "" {
			if _, err := t.m.LoadWeights(cfg.InitWeights, checkpoint.LoadOptions{}); err != nil {
				return err
			}
		}
		if cfg.Autoencoder != "" {
			if _, err := t.m.LoadAutoencoder(cfg.Autoencoder); err != nil {
				return err
			}
		}
		t.noise = diffusion.NewNoise(cfg.Seed)
		t.st = state{Stage: StageDenoiser, BestVal: Float(math.Inf(1))}
		if cfg.AutoencoderSteps > 0 {
			t.st.Stage = StageAutoencoder
		}
	}
	t.m.SetRecompute(cfg.GradientCheckpointing)
	t.trainSamples = trainSamples
	lc := datasets.LoaderConfig{Size: mcfg.ImageSize, BatchSize: cfg.BatchSize, Shuffle: true, DropLast: len(trainSamples) >= cfg.BatchSize, Workers: cfg.Data.Workers, Seed: cfg.Seed}
	if t.train, err = datasets.NewLoader(trainSamples, lc); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	if len(valSamples) > 0 {
		lc.Shuffle, lc.DropLast = false, false
		if t.val, err = datasets.NewLoader(valSamples, lc); err != nil {
			return fmt.Errorf("train: %w", err)
		}
	}
	t.log.Info("start", "resume", resuming, "train_images", len(trainSamples), "val_images", len(valSamples),
		"categories", ix.Categories, "preset", mcfg.Preset, "device", torchrt.DeviceName(dev), "stage", t.st.Stage, "step", t.st.Step,
		"onednn", torchrt.OneDNNVersion(), "onednn_on", torchrt.OneDNNEnabled())
	return t.beginStage(resuming)
}

func (t *trainer) modelConfig() (model.Config, error) {
	if t.cfg.ModelConfig != "" {
		return model.LoadConfig(t.cfg.ModelConfig)
	}
	if t.cfg.InitWeights != "" {
		return model.ReadConfig(t.cfg.InitWeights)
	}
	return model.Preset(t.cfg.Preset)
}

// holdOut splits off a deterministic fraction of the training images.
func holdOut(s []datasets.Sample, frac float64, seed uint64) (train, val []datasets.Sample) {
	n := int(math.Round(frac * float64(len(s))))
	if frac > 0 && n == 0 && len(s) >= 2 {
		n = 1
	}
	if n == 0 {
		return s, nil
	}
	order := datasets.Permutation(len(s), seed^0x7a1, 0)
	isVal := map[int]bool{}
	for _, i := range order[:n] {
		isVal[i] = true
	}
	for i, x := range s {
		if isVal[i] {
			val = append(val, x)
		} else {
			train = append(train, x)
		}
	}
	return train, val
}

// beginStage sets the freezing split and optimizer of the current stage.
func (t *trainer) beginStage(restoring bool) error {
	if t.opt != nil && !restoring {
		t.opt.Free()
		t.opt = nil
	}
	if t.st.Stage == StageDone {
		return nil
	}
	freeze, ocfg, err := t.cfg.stageTraining(t.st.Stage)
	if err != nil {
		return err
	}
	t.m.SetFreeze(freeze)
	if t.opt != nil {
		return nil // restored with its state
	}
	opt, err := optim.NewAdamW(t.m.Store.Trainable(), ocfg)
	if err != nil {
		return err
	}
	t.opt = opt
	if t.st.Stage == StageDenoiser && t.cfg.EMADecay > 0 {
		t.ema = newEMA(t.m.Store.Trainable(), t.cfg.EMADecay)
	}
	t.emit(Event{Kind: shared.EventStage, Message: t.st.Stage})
	return nil
}

// stageTraining is what a stage trains and how: its freezing split and
// optimizer settings (the one rule for a fresh stage and a resumed one).
func (c Config) stageTraining(stage string) (model.Freeze, optim.AdamWConfig, error) {
	if stage == StageAutoencoder {
		return model.FreezeAutoencoderOnly, c.AutoencoderOptim, nil
	}
	f, err := model.ParseFreeze(c.Freeze)
	if err != nil {
		return "", optim.AdamWConfig{}, err
	}
	return f, c.Optim, nil
}

func (t *trainer) stageSteps() int {
	if t.st.Stage == StageAutoencoder {
		return t.cfg.AutoencoderSteps
	}
	if t.cfg.MaxSteps > 0 {
		return t.cfg.MaxSteps
	}
	if t.cfg.MaxEpochs > 0 {
		return t.cfg.MaxEpochs * t.train.BatchesPerEpoch() / t.cfg.GradAccum
	}
	return 0
}

// loss computes the current stage's loss on a batch.
func (t *trainer) loss(images *ts.Tensor, noise *diffusion.Noise) (*ts.Tensor, error) {
	if t.st.Stage == StageAutoencoder {
		return t.autoencoderLoss(images, noise)
	}
	if t.cfg.RemoveFraction > 0 {
		return t.removingLoss(images, noise)
	}
	if p := t.cfg.GuidanceDropout; p > 0 {
		loss, err := t.m.TrainLossDropping(images, drawShare(noise, int(images.MustSize()[0]), p), noise)
		if err != nil {
			return nil, fmt.Errorf("denoiser loss: %w", err)
		}
		return loss, nil
	}
	if c := t.cfg.LossWeightCap; c > 0 {
		ac := t.m.Schedule.AlphasCumprod
		return t.m.TrainLossWeighted(images, noise, func(ti int) float64 {
			return math.Min(math.Max((1-ac[ti])/ac[ti], 1), c)
		})
	}
	return t.m.TrainLoss(images, noise)
}

// drawShare marks each of n images with probability share, from the
// training noise (so a resumed run draws the same marks).
func drawShare(noise *diffusion.Noise, n int, share float64) []bool {
	marked := make([]bool, n)
	for i := range marked {
		marked[i] = float64(noise.Uint64()>>11)/(1<<53) < share
	}
	return marked
}

// removingLoss gives RemoveFraction of the batch a synthetic defect for the
// SG network to see, with the clean images as the target.
func (t *trainer) removingLoss(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	err = torchrt.Do(func() error {
		size := t.m.Config.ImageSize
		b := int(images.MustSize()[0])
		flat := torchrt.Float32s(images)
		hw3 := 3 * size * size
		clean := make([]calibrate.Image, b)
		for i := range clean {
			clean[i] = flat[i*hw3 : (i+1)*hw3]
		}
		bad, _ := calibrate.Corrupt(clean, size, noise.Uint64()) // the masks are not needed here
		removing := drawShare(noise, b, t.cfg.RemoveFraction)
		cond := make([]float32, 0, len(flat))
		for i := range clean {
			if removing[i] {
				cond = append(cond, bad[i]...)
			} else {
				cond = append(cond, clean[i]...)
			}
		}
		c := torchrt.ImageBatch(cond, b, size, images.MustDevice())
		defer c.MustDrop()
		loss, err = t.m.TrainLossRemoving(c, images, removing, noise)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("denoiser loss: %w", err)
	}
	return loss, nil
}

// autoencoderLoss is stage 1: L1 reconstruction of a posterior sample plus
// KLWeight times the KL divergence.
func (t *trainer) autoencoderLoss(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	err = torchrt.Do(func() error {
		loss, err = t.autoencoderLossOf(images, noise)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("autoencoder loss: %w", err)
	}
	return loss, nil
}

func (t *trainer) autoencoderLossOf(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	if c := int64(t.cfg.AutoencoderCrop); c > 0 && c < images.MustSize()[2] {
		// A random square crop (the same for the whole batch): the
		// autoencoder is convolutional, so crops teach it the same
		// mapping at a fraction of the cost.
		size := images.MustSize()
		oy := int64(noise.Uint64() % uint64(size[2]-c+1))
		ox := int64(noise.Uint64() % uint64(size[3]-c+1))
		images = images.MustNarrow(2, oy, c, false).MustNarrow(3, ox, c, true)
		defer images.MustDrop()
	}
	post := t.m.AE.Encode(images)
	defer post.Free()
	eps := noise.Normal(post.Mean.MustSize(), t.m.Device())
	z := post.Sample(eps)
	eps.MustDrop()
	rec := t.m.AE.DecodeRaw(z)
	z.MustDrop()
	var ssim *ts.Tensor
	if w := t.cfg.AutoencoderSSIMWeight; w > 0 {
		a, b := scoring.ToUnit(images), scoring.ToUnit(rec)
		m := scoring.SSIMMap(a, b)
		a.MustDrop()
		b.MustDrop()
		ssim = m.MustMean(m.DType(), true).MustNeg(true).MustAddScalar(ts.FloatScalar(1), true).MustMulScalar(ts.FloatScalar(w), true)
	}
	l1 := rec.MustL1Loss(images, 1, true)
	kl := post.KL().MustMulScalar(ts.FloatScalar(t.cfg.KLWeight), true)
	out := l1.MustAdd(kl, true)
	kl.MustDrop()
	if ssim != nil {
		out = out.MustAdd(ssim, true)
		ssim.MustDrop()
	}
	return out, nil
}

func toTensor(b datasets.Batch, size int, dev gotch.Device) *ts.Tensor {
	return torchrt.ImageBatch(b.Images(), len(b.Items), size, dev)
}

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

// saveCheckpoint writes model, optimizer and state atomically.
func (t *trainer) saveCheckpoint() error {
	noise, err := t.noise.MarshalBinary()
	if err != nil {
		return err
	}
	t.st.Noise = noise
	stateJSON, err := json.Marshal(t.st)
	if err != nil {
		return fmt.Errorf("train: checkpoint state: %w", err)
	}
	cfgYAML, err := yaml.Marshal(t.cfg)
	if err != nil {
		return fmt.Errorf("train: checkpoint config: %w", err)
	}
	modelYAML, err := yaml.Marshal(t.m.Config)
	if err != nil {
		return fmt.Errorf("train: checkpoint model config: %w", err)
	}
	tensors := checkpoint.StoreTensors(t.m.Store)
	optStep := int64(0)
	if t.opt != nil && t.st.Stage != StageDone {
		for name, v := range t.opt.State() {
			tensors[optPrefix+name] = v
		}
		optStep = t.opt.Step
	}
	if t.ema != nil {
		for name, v := range t.ema.state() {
			tensors[name] = v
		}
	}
	meta := map[string]string{model.MetaFormat: model.FormatVersion, model.MetaConfig: string(modelYAML), model.MetaPreset: t.m.Config.Preset,
		metaState: string(stateJSON), metaConfig: string(cfgYAML), "diad.optimizer_step": fmt.Sprint(optStep)}
	path := filepath.Join(t.cfg.OutDir, CheckpointFile)
	if err := checkpoint.Save(path, tensors, meta); err != nil {
		return err
	}
	t.emit(Event{Kind: shared.EventCheckpoint, Step: t.st.Step, Message: path})
	t.log.Info("checkpoint", "stage", t.st.Stage, "step", t.st.Step, "path", path)
	if t.opts.afterCheckpoint != nil {
		t.opts.afterCheckpoint(t.st.Stage, t.st.Step)
	}
	return nil
}

// restore rebuilds the model, optimizer and state from a checkpoint. On an
// error it frees all it made (model, optimizer, average) before returning.
func (t *trainer) restore(path string, dev gotch.Device) (m *model.DiAD, err error) {
	r, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	defer func() {
		if err == nil {
			return
		}
		if t.ema != nil {
			t.ema.free()
			t.ema = nil
		}
		if t.opt != nil {
			t.opt.Free()
			t.opt = nil
		}
		if m != nil {
			m.Free()
			m, t.m = nil, nil
		}
		err = fmt.Errorf("resume %s: %w", path, err)
	}()
	var st state
	if err := json.Unmarshal([]byte(r.Metadata()[metaState]), &st); err != nil {
		return nil, fmt.Errorf("training state: %w", err)
	}
	mcfg, err := model.ConfigFromCheckpoint(r)
	if err != nil {
		return nil, err
	}
	if m, err = model.New(mcfg, dev); err != nil {
		return nil, err
	}
	if _, err := checkpoint.LoadInto(m.Store, r, checkpoint.LoadOptions{Rename: func(n string) string {
		if strings.HasPrefix(n, optPrefix) || strings.HasPrefix(n, emaPrefix) {
			return ""
		}
		return n
	}}); err != nil {
		return m, err
	}
	t.m, t.st = m, st
	t.noise = diffusion.NewNoise(0)
	if err := t.noise.UnmarshalBinary(st.Noise); err != nil {
		return m, fmt.Errorf("noise state: %w", err)
	}
	if st.Stage == StageDone {
		return m, nil
	}
	if err := t.restoreOptimizer(r, dev); err != nil {
		return m, err
	}
	if st.Stage == StageDenoiser && t.cfg.EMADecay > 0 {
		return m, t.restoreAverage(r, dev)
	}
	return m, nil
}

// restoreOptimizer makes the current stage's optimizer (t.opt) and loads
// its moments and step from the checkpoint.
func (t *trainer) restoreOptimizer(r checkpoint.Reader, dev gotch.Device) error {
	freeze, ocfg, err := t.cfg.stageTraining(t.st.Stage)
	if err != nil {
		return err
	}
	t.m.SetFreeze(freeze)
	if t.opt, err = optim.NewAdamW(t.m.Store.Trainable(), ocfg); err != nil {
		return err
	}
	saved, err := loadPrefixed(r, optPrefix, dev)
	if err != nil {
		return err
	}
	defer dropAll(saved)
	raw := r.Metadata()["diad.optimizer_step"]
	step, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return fmt.Errorf("optimizer step %q: %w", raw, err)
	}
	return t.opt.LoadState(saved, step)
}

// restoreAverage makes the denoiser's weight average (t.ema) and loads it
// from the checkpoint.
func (t *trainer) restoreAverage(r checkpoint.Reader, dev gotch.Device) error {
	t.ema = newEMA(t.m.Store.Trainable(), t.cfg.EMADecay)
	avg, err := loadPrefixed(r, emaPrefix, dev)
	if err != nil {
		return err
	}
	defer dropAll(avg)
	if err := t.ema.load(avg); err != nil {
		return err
	}
	t.ema.Updates = t.st.EMAUpdates
	return nil
}

// loadPrefixed loads the checkpoint's tensors whose names start with prefix,
// keyed by the rest of the name; on an error it frees those it loaded.
func loadPrefixed(r checkpoint.Reader, prefix string, dev gotch.Device) (map[string]*ts.Tensor, error) {
	out := map[string]*ts.Tensor{}
	for _, e := range r.Entries() {
		name, ok := strings.CutPrefix(e.Name, prefix)
		if !ok {
			continue
		}
		v, err := r.Load(e.Name, dev)
		if err != nil {
			dropAll(out)
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

// dropAll frees every tensor of m.
func dropAll(m map[string]*ts.Tensor) {
	for _, v := range m {
		v.MustDrop()
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// openLog creates dir if needed and opens its training log for appending.
func openLog(dir string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, LogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	return f, nil
}

// runFiles are what a training run leaves in its folder.
var runFiles = []string{CheckpointFile, ModelFile, BestFile, NoEMAFile, LogFile}

// claimOutDir refuses a folder that holds another training run unless the
// run is resumed or replaced (Force, which removes the old run's files).
func claimOutDir(dir string, opts Options) error {
	if opts.Resume {
		return nil
	}
	var found []string
	for _, f := range runFiles {
		if fileExists(filepath.Join(dir, f)) {
			found = append(found, f)
		}
	}
	if len(found) == 0 {
		return nil
	}
	if !opts.Force {
		return fmt.Errorf("train: %s already holds a training run (%s): continue it with --resume, or replace it with --force", dir, strings.Join(found, ", "))
	}
	for _, f := range found {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("train: replace the run in %s: %w", dir, err)
		}
	}
	return nil
}

// baseLR is the current stage's configured learning rate.
func (t *trainer) baseLR() float64 {
	if t.st.Stage == StageAutoencoder {
		return t.cfg.AutoencoderOptim.LR
	}
	return t.cfg.Optim.LR
}

// scaleLatents sets the autoencoder's scale factor to 1/std of the unscaled
// posterior samples of (up to 16 batches of) the training images.
func (t *trainer) scaleLatents(ctx context.Context) error {
	noise := diffusion.NewNoise(t.cfg.Seed ^ 0x5ca1e)
	var sum, sumSq, n float64
	var err error
	ectx, cancel := context.WithCancel(ctx)
	defer cancel()
	torchrt.NoGrad(func() {
		batches := 0
		for r := range t.train.Epoch(ectx, 0, 0) {
			if r.Err != nil {
				err = r.Err
				return
			}
			unlock := torchrt.LockCompute()
			x := toTensor(r.Batch, t.m.Config.ImageSize, t.m.Device())
			post := t.m.AE.Encode(x)
			eps := noise.Normal(post.Mean.MustSize(), t.m.Device())
			z := post.Sample(eps)
			vals := torchrt.Float64s(z)
			z.MustDrop()
			eps.MustDrop()
			post.Free()
			x.MustDrop()
			unlock()
			for _, v := range vals {
				sum += v
				sumSq += v * v
			}
			n += float64(len(vals))
			if batches++; batches >= 16 {
				break
			}
		}
	})
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	mean := sum / n
	std := math.Sqrt(math.Max(sumSq/n-mean*mean, 0))
	if !(std > 1e-8) {
		return fmt.Errorf("train: latents have no spread (std %g): the autoencoder collapsed", std)
	}
	f := 1 / std
	t.m.AE.SetScaleFactor(f)
	t.m.Config.Autoencoder.ScaleFactor = f
	t.log.Info("latent scale", "std", std, "scale_factor", f)
	t.emit(Event{Kind: shared.EventStage, Message: fmt.Sprintf("latent scale factor %.4f (latent std %.4f)", f, std)})
	return nil
}

// calibrate chooses the start level and the scorer's term scales on the
// held-out images (see package calibrate) and writes them into the model's
// config, which the saved model carries.
func (t *trainer) calibrate(ctx context.Context) error {
	return t.calibrateWith(ctx, t.cfg.StartTCandidates, t.cfg.Scorer, t.cfg.ScorerCandidates)
}

// calibrateWith is calibrate with the given candidates.
func (t *trainer) calibrateWith(ctx context.Context, startTs []int, scorer string, scorerCandidates []string) error {
	choosesScorer := scorer != "" || len(scorerCandidates) > 0
	if t.val == nil || (!choosesScorer && len(startTs) == 0) {
		return nil
	}
	var images []calibrate.Image
	for r := range t.val.Epoch(ctx, 0, 0) {
		if r.Err != nil {
			return r.Err
		}
		for _, it := range r.Batch.Items {
			images = append(images, it.Image)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	kind := scorer
	if kind == "" {
		kind = scoring.KindAE
	}
	t.emit(Event{Kind: shared.EventStage, Message: fmt.Sprintf("calibrating the start level %v and scorer on %d held-out images", startTs, len(images))})
	res, err := calibrate.Run(ctx, t.m, images, calibrate.Config{StartTCandidates: startTs, Scorer: kind,
		ScorerCandidates: scorerCandidates, Seed: t.cfg.Seed, BatchSize: t.cfg.BatchSize})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	for _, tr := range res.Trials {
		t.log.Info("calibration", "start_t", tr.StartT, "scorer", tr.Scorer, "image_auroc", tr.ImageAUROC, "pixel_auroc", tr.PixelAUROC, "scales", tr.Scales)
		t.emit(Event{Kind: shared.EventCalibration, Message: fmt.Sprintf("start level %d, scorer %s: held-out image AUROC %.3f, pixel AUROC %.3f", tr.StartT, tr.Scorer, tr.ImageAUROC, tr.PixelAUROC)})
	}
	if len(startTs) > 0 {
		t.m.Config.Sampler.StartT = res.StartT
		t.m.Config.Sampler.Timesteps = nil
	}
	if choosesScorer {
		t.m.Config.Scorer = res.Scorer
	}
	t.log.Info("calibrated", "start_t", t.m.Config.Sampler.StartT, "scorer", res.Scorer)
	return nil
}
