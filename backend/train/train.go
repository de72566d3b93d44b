package train

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

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
		if cfg.PatchMemory.Enabled() {
			mcfg.PatchMemory = cfg.PatchMemory
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
	var groups []string
	for r := range t.val.Epoch(ctx, 0, 0) {
		if r.Err != nil {
			return r.Err
		}
		for _, it := range r.Batch.Items {
			images = append(images, it.Image)
			groups = append(groups, it.Sample.Category)
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
	res, err := calibrate.Run(ctx, t.m, images, groups, calibrate.Config{StartTCandidates: startTs, Scorer: kind,
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
